// Package apierr holds the error a client is allowed to see: an HTTP status,
// a snake_case code and a message safe to show. Packages that answer HTTP
// requests return it; the API's one error writer turns it into the JSON
// error body. Internal errors must never be wrapped in it.
package apierr

// Error is an error with the status and code a client sees.
type Error struct {
	Status  int
	Code    string
	Message string
	// Details are JSON values listed under "details" in the error body.
	Details []any
	// RetryAfter, when above 0, is the Retry-After of a 429 or 503 answer
	// in seconds, instead of the writer's usual one.
	RetryAfter int
}

func (e *Error) Error() string { return e.Message }

// New returns an Error.
func New(status int, code, message string, details ...any) *Error {
	return &Error{Status: status, Code: code, Message: message, Details: details}
}
