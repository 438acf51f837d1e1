package docs

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIJSONIsTheYAML: the JSON served is the YAML document, value for
// value, with the paths in the file's order.
func TestOpenAPIJSONIsTheYAML(t *testing.T) {
	js, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML any
	if err := json.Unmarshal(js, &fromJSON); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if err := yaml.Unmarshal(OpenAPIYAML, &fromYAML); err != nil {
		t.Fatal(err)
	}
	// YAML integers decode as int, JSON numbers as float64: compare as JSON
	y, _ := json.Marshal(fromYAML)
	var yv any
	json.Unmarshal(y, &yv)
	if !reflect.DeepEqual(fromJSON, yv) {
		t.Error("the JSON document differs from openapi.yaml")
	}
	if !strings.HasPrefix(string(js), `{"openapi":"3.1.0","info":`) {
		t.Errorf("the JSON does not keep the YAML's order: %.60s", js)
	}
	if i, j := strings.Index(string(js), `"/api/broadcast"`), strings.Index(string(js), `"/healthz"`); i < 0 || j < i {
		t.Error("paths are not in the file's order")
	}
}

func TestYAMLToJSONScalars(t *testing.T) {
	got, err := yamlToJSON([]byte("a: 1\nb: 1.5\nc: true\nd: null\ne: \"3\"\nf: [x, 2]\ng: &x {h: 1}\ni: *x\nj: 2026-12-05\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":1,"b":1.5,"c":true,"d":null,"e":"3","f":["x",2],"g":{"h":1},"i":{"h":1},"j":"2026-12-05"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
