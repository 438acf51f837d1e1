package config

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// settingLine matches a commented-out setting of hub.example.yaml:
// "# key: value  # comment".
var settingLine = regexp.MustCompile(`^#\s?([a-z][a-z0-9_]*):(\s.*)?$`)

// TestExampleYAML keeps hub.example.yaml in step with the key table: every
// key appears once, and the file, uncommented, parses to the defaults.
func TestExampleYAML(t *testing.T) {
	data, err := os.ReadFile("../hub.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	asWritten := Default()
	if err := asWritten.applyYAML(data, "hub.example.yaml"); err != nil {
		t.Fatalf("hub.example.yaml as written: %v", err)
	}

	var settings []string
	count := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		m := settingLine.FindStringSubmatch(line)
		if m == nil || byName[m[1]] == nil {
			continue
		}
		count[m[1]]++
		settings = append(settings, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
	}
	for _, k := range Keys() {
		if count[k.YAML] != 1 {
			t.Errorf("hub.example.yaml has %d lines for %s, want 1", count[k.YAML], k.YAML)
		}
	}

	// Uncommented, the example gives the defaults (node_name shows an example).
	var got Config
	if err := got.applyYAML([]byte(strings.Join(settings, "\n")), "hub.example.yaml (uncommented)"); err != nil {
		t.Fatalf("uncommented hub.example.yaml: %v", err)
	}
	// The example sets no JWT key, so it validates in development mode only.
	dev := got
	dev.Dev = true
	if err := dev.Validate(); err != nil {
		t.Errorf("uncommented hub.example.yaml does not validate in development mode: %v", err)
	}
	want := Default()
	got.NodeName = want.NodeName
	if !reflect.DeepEqual(got, want) {
		t.Errorf("uncommented hub.example.yaml gives\n%+v\nwant the defaults\n%+v", got, want)
	}
}

func TestMarkdown(t *testing.T) {
	md := Markdown()
	lines := strings.Split(strings.TrimSuffix(md, "\n"), "\n")
	if len(lines) != len(Keys())+2 {
		t.Fatalf("Markdown() has %d lines, want %d", len(lines), len(Keys())+2)
	}
	if lines[0] != "| env | yaml | flag | default | meaning |" {
		t.Errorf("header = %q", lines[0])
	}
	for i, k := range Keys() {
		line := lines[i+2]
		if !strings.HasPrefix(line, "| `"+k.Env+"` | `"+k.YAML+"` | `--"+k.Flag+"` | ") {
			t.Errorf("row %d = %q, want key %s", i, line, k.Env)
		}
		if got := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|"); got != 6 {
			t.Errorf("row %q has %d cell borders, want 6", line, got)
		}
	}
	if !strings.Contains(md, "| `HUB_MAX_PAYLOAD` | `max_payload` | `--max-payload` | `64KiB` |") {
		t.Error("Markdown() misses the max_payload row with its default")
	}
}

// TestOperationsDoc checks that docs/OPERATIONS.md, once it exists, holds
// the exact table Markdown renders.
func TestOperationsDoc(t *testing.T) {
	data, err := os.ReadFile("../docs/OPERATIONS.md")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("docs/OPERATIONS.md does not exist yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), Markdown()) {
		t.Errorf("docs/OPERATIONS.md does not contain the table of config.Markdown(); paste it:\n%s", Markdown())
	}
}
