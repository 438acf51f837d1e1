package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ErrVersion is what [Load] returns for --version: print the version and
// exit 0, as for [flag.ErrHelp].
var ErrVersion = errors.New("config: --version")

// flagValues records the flags given on the command line, as text; they
// are applied after the file and the environment.
type flagValues struct {
	values     map[string]string // by key name
	configFile string
	configSet  bool
	version    bool
}

// recorder is the flag.Value of one key: it records the text it is given.
type recorder struct {
	k   *key
	set func(k *key, s string)
}

func (r *recorder) String() string {
	if r == nil || r.k == nil || r.k.prose {
		return ""
	}
	return r.k.def
}

func (r *recorder) Set(s string) error {
	r.set(r.k, s)
	return nil
}

// IsBoolFlag lets boolean keys be given as a bare --flag.
func (r *recorder) IsBoolFlag() bool { return r != nil && r.k != nil && r.k.boolean }

// configValue is the flag.Value of --config.
type configValue struct{ fl *flagValues }

func (v *configValue) String() string { return "" }

func (v *configValue) Set(s string) error {
	v.fl.configFile, v.fl.configSet = strings.TrimSpace(s), true
	return nil
}

// versionValue is the flag.Value of --version.
type versionValue struct{ fl *flagValues }

func (v *versionValue) String() string   { return "" }
func (v *versionValue) IsBoolFlag() bool { return true }
func (v *versionValue) Set(s string) error {
	v.fl.version = s != "false" && s != "0"
	return nil
}

// newFlagSet returns a FlagSet with --config and one flag per key, writing
// its messages to w, and the values it records.
func newFlagSet(w io.Writer) (*flag.FlagSet, *flagValues) {
	fl := &flagValues{values: make(map[string]string)}
	fs := flag.NewFlagSet("hubd", flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Var(&configValue{fl}, "config", configHelp)
	fs.Var(&versionValue{fl}, "version", versionHelp)
	record := func(k *key, s string) { fl.values[k.name] = s }
	for i := range table {
		k := &table[i]
		fs.Var(&recorder{k: k, set: record}, k.flag(), k.help) // Usage prints the help
	}
	return fs, fl
}

const (
	configHelp  = "YAML file with settings (also HUB_CONFIG)"
	versionHelp = "print the version, the commit and the Go version, and exit"
)

// typeLegend explains the value types that Usage shows after the flags.
const typeLegend = `Values: duration in Go syntax (25s, 10m, 1h30m); size in bytes or with a unit
(64KiB, 1MiB, 2GB); list and cidrs comma-separated (a,b,c); a boolean flag
alone means true (--dev), --dev=false sets false.
`

// Usage returns the command-line help: every flag with the type of its
// value, its environment variable, its default and its meaning, in the
// order of the key table. Print it when [Load] returns [flag.ErrHelp].
func Usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: hubd [flags]\n\n")
	fmt.Fprintf(&b, "Settings come from the defaults < a YAML file (--config) < HUB_* environment variables < flags.\n\n")
	writeFlag(&b, "config", "file", "", configHelp)
	writeFlag(&b, "version", "", "", versionHelp)
	for i := range table {
		k := &table[i]
		note := k.env()
		switch {
		case k.def == "":
		case k.prose:
			note += ", default: " + k.def
		default:
			note += ", default " + k.def
		}
		typ := k.typ
		if k.boolean {
			typ = ""
		}
		writeFlag(&b, k.flag(), typ, note, k.help)
	}
	b.WriteString("\n" + typeLegend)
	return b.String()
}

// writeFlag writes one flag of Usage: "  --name type  (note)" and the help
// indented on the next line.
func writeFlag(b *strings.Builder, name, typ, note, help string) {
	head := "  --" + name
	if typ != "" {
		head += " " + typ
	}
	if note != "" {
		head += "  (" + note + ")"
	}
	fmt.Fprintf(b, "%s\n        %s\n", head, help)
}
