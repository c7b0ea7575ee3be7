// Package claudeq holds the domain of the gateway: jobs and their states,
// principals, usage, the model catalog and the typed error every other
// package returns. It imports nothing from this module and only the standard
// library, so that every adapter can depend on it and on nothing else.
package claudeq
