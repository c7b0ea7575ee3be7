package claudeq

import "log/slog"

// Secret is a string that never prints: String, GoString, LogValue,
// MarshalJSON, MarshalText and MarshalYAML all give "REDACTED". Reveal
// returns the value for the one place that needs it (a client's
// credentials, a connection string).
type Secret string

const redacted = "REDACTED"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer, so %#v redacts too.
func (Secret) GoString() string { return `"` + redacted + `"` }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (map keys, XML, env dumps).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalYAML implements yaml.Marshaler.
func (Secret) MarshalYAML() (any, error) { return redacted, nil }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }
