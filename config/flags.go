package config

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagValues records the flags given on the command line, as text; they
// are applied after the file and the environment.
type flagValues struct {
	values     map[string]string // by key name
	configFile string
	configSet  bool
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

// newFlagSet returns a FlagSet with --config and one flag per key, writing
// its messages to w, and the values it records.
func newFlagSet(w io.Writer) (*flag.FlagSet, *flagValues) {
	fl := &flagValues{values: make(map[string]string)}
	fs := flag.NewFlagSet("hubd", flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Var(&configValue{fl}, "config", "YAML `file` with settings (also HUB_CONFIG)")
	record := func(k *key, s string) { fl.values[k.name] = s }
	for i := range table {
		k := &table[i]
		help := k.help + " (" + k.env() + ")"
		if k.prose {
			help += "; default: " + k.def
		}
		fs.Var(&recorder{k: k, set: record}, k.flag(), help)
	}
	return fs, fl
}

// Usage returns the command-line help: every flag with its meaning,
// environment variable and default. Print it when [Load] returns
// [flag.ErrHelp].
func Usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: hubd [flags]\n\n")
	fmt.Fprintf(&b, "Settings come from the defaults < a YAML file (--config) < HUB_* environment variables < flags.\n\n")
	fs, _ := newFlagSet(&b)
	fs.PrintDefaults()
	return b.String()
}
