package config

import (
	"fmt"
	"slices"
	"strings"
)

// environment is the process environment as Load reads it.
type environment map[string]string

// parseEnviron reads environ, in the form of os.Environ ("KEY=value"). When
// a name appears twice the first one counts, as with os.Getenv.
func parseEnviron(environ []string) environment {
	env := make(environment, len(environ))
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		if _, dup := env[name]; !dup {
			env[name] = value
		}
	}
	return env
}

// lookup returns the value of name and whether it is set (perhaps empty).
func (e environment) lookup(name string) (string, bool) {
	v, ok := e[name]
	return v, ok
}

// otherVariables are HUB_ variables that are no configuration key but are
// read by someone else: hubctl's defaults and the test suite's switches.
var otherVariables = map[string]bool{
	configEnv:         true, // the YAML file (--config)
	"HUB_URL":         true, // hubctl
	"HUB_TOKEN":       true, // hubctl
	"HUB_API_KEY":     true, // hubctl
	"HUB_SCREENSHOTS": true, // web tests
	"HUB_SOAK":        true, // modules tests
	"HUB_SEED":        true, // modules tests
	"HUB_CHROMIUM":    true, // web tests
}

// otherPrefixes are prefixes of such variables (HUB_REQUIRE_REDIS, ...).
var otherPrefixes = []string{"HUB_REQUIRE_"}

// unknownVariables returns a warning for each variable of env that starts
// with HUB_ but is neither a key nor one of otherVariables, naming the
// nearest key. Values are never shown. The warnings are sorted by name.
func (e environment) unknownVariables() []string {
	var names []string
	for name := range e {
		if !strings.HasPrefix(name, "HUB_") || otherVariables[name] || envKey(name) != nil {
			continue
		}
		other := false
		for _, p := range otherPrefixes {
			other = other || strings.HasPrefix(name, p)
		}
		if !other {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	warnings := make([]string, 0, len(names))
	for _, name := range names {
		warnings = append(warnings, fmt.Sprintf("config: %s is not a configuration key and is ignored (did you mean %s?)", name, nearestVariable(name)))
	}
	return warnings
}

// envKey returns the key whose environment variable is name, or nil.
func envKey(name string) *key {
	k, ok := byName[strings.ToLower(strings.TrimPrefix(name, "HUB_"))]
	if !ok || k.env() != name {
		return nil
	}
	return k
}

// nearestVariable returns the key variable (or HUB_CONFIG) closest to name
// in edit distance; the first in table order on a tie.
func nearestVariable(name string) string {
	best, bestDist := "", -1
	try := func(candidate string) {
		if d := editDistance(name, candidate); bestDist < 0 || d < bestDist {
			best, bestDist = candidate, d
		}
	}
	for i := range table {
		try(table[i].env())
	}
	try(configEnv)
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes
// (variable names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
