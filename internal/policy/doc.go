// Package policy is claudeq's content policy: it finds sensitive data in
// prompts (and, if the operator wants, in responses) and blocks, redacts or
// merely counts it before anything leaves for the upstream.
//
// # What is detected
//
// Built-in detectors, each a Finding Kind:
//
//   - credit_card: 13–19 ASCII digits, either contiguous or in groups of 3–6
//     digits separated by single spaces or dashes ("4111 1111 1111 1111",
//     "3782-822463-10005"), that pass the Luhn check. A run of digits that
//     fails Luhn is never flagged, so random numbers are flagged about one
//     time in ten only if they also have a card's length and shape. A
//     contiguous run longer than 19 digits is not a card (nor is any part of
//     it: hashes and ids would flag constantly); inside a longer grouped run
//     ("4111 1111 1111 1111 2025") the longest Luhn-valid span of whole groups
//     is taken. Digits glued to letters ("VISA4111…") are not flagged.
//     [Config.RequireKnownIIN] additionally requires a known issuer prefix
//     (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
//   - ssn: US Social Security numbers. "AAA-GG-SSSS" with dashes is always
//     checked. "AAA GG SSSS" with spaces and the unseparated "AAAGGSSSS" are
//     flagged only when a context word ("SSN", "social security", "soc sec",
//     "SS#", "SS no") appears within 48 bytes before or after the number,
//     since nine bare digits are far more often something else. Numbers that
//     no SSA rule allows are never flagged: area 000, 666 or 900–999, group
//     00, serial 0000. A number that is part of a longer identifier is not an
//     SSN: "ORD-123-45-6789", "1-123-45-6789", "x123456789" and
//     "3.123456789" are left alone.
//   - email: a practical subset of RFC 5322: a dot-atom local part of
//     letters, digits and ._%+- (at most 64 bytes, no leading, trailing or
//     double dot), "@", and a domain of at least two labels ending in an
//     alphabetic TLD of two or more letters. Quoted local parts, IP-literal
//     domains and non-ASCII addresses are not detected. E-mail addresses in
//     Markdown code (`inline` or fenced ``` blocks) ARE flagged by default:
//     an address is personal data wherever it appears, and code pasted into
//     a prompt is a common way for it to leak. Set [Config.SkipEmailsInCode]
//     to ignore them, and [Config.AllowEmailDomains] to ignore addresses at
//     placeholder or corporate domains.
//
// Operators add their own detectors as "name=regex" patterns
// ([ParsePatterns]); name becomes the Finding Kind.
//
// # Actions
//
// [Block] refuses the text with a *claudeq.Error of KindContentPolicy whose
// message names only the kinds found ("prompt contains: credit_card,
// email"), never the matched text. [Redact] replaces each match with
// "[REDACTED_<KIND>]". [Allow] changes nothing but still reports what it
// found, for the audit log. Findings are reported as a [Summary]: kind →
// count, never the text.
//
// Offsets in a [Finding] are byte offsets into the (UTF-8) text.
package policy
