package httpapi

import (
	"errors"
	"io"
	"net/http"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// decodeStrict reads a request body of the API's own (a token request, an
// acknowledgement) into v strictly: one object, member names as written and
// each once, no unknown members, valid UTF-8, nothing after it. shape is
// how the error shows what the body should be.
func decodeStrict(body []byte, v any, shape string) error {
	problem := ""
	if err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		problem = jsonProblem(err)
	} else if jsontext.Value(body).Kind() != '{' {
		problem = "not a JSON object" // null, which Unmarshal takes as nothing
	}
	if problem == "" {
		return nil
	}
	return errorf(http.StatusBadRequest, "invalid_request", "body must be "+shape+": "+problem)
}

func jsonProblem(err error) string {
	var se *jsonv2.SemanticError
	switch {
	case errors.Is(err, jsonv2.ErrUnknownName):
		return "unknown field"
	case errors.Is(err, jsontext.ErrDuplicateName):
		return "a field is given twice"
	case errors.As(err, &se) && se.JSONPointer != "":
		return "field " + string(se.JSONPointer) + " has the wrong type"
	case se != nil:
		return "not a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or cut short"
	}
	return "malformed JSON (one object, valid UTF-8)"
}
