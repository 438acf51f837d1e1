package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// applyYAML applies the keys of a YAML document to c. name names the file
// in messages. Scalars of any YAML type are taken as text and parsed like an
// environment variable; list keys also accept a sequence of scalars. A null
// value keeps the current value.
func (c *Config) applyYAML(data []byte, name string) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return fmt.Errorf("config: parse %s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: parse %s: want one YAML document", name)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config: %s line %d: want a mapping of keys to values", name, root.Line)
	}

	seen := make(map[string]bool)
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], root.Content[i+1]
		k, ok := byName[kn.Value]
		if kn.Kind != yaml.ScalarNode || !ok {
			return fmt.Errorf("config: %s line %d: unknown key %q%s", name, kn.Line, kn.Value, suggest(kn.Value))
		}
		if seen[k.name] {
			return fmt.Errorf("config: %s line %d: key %q appears twice", name, kn.Line, kn.Value)
		}
		seen[k.name] = true
		if err := c.applyNode(k, vn); err != nil {
			return err
		}
	}
	return nil
}

// applyNode applies one YAML value to k's field of c.
func (c *Config) applyNode(k *key, vn *yaml.Node) error {
	for depth := 0; vn.Kind == yaml.AliasNode; depth++ {
		if vn.Alias == nil || depth > 10 {
			return k.invalid("", errors.New("unresolved YAML alias"))
		}
		vn = vn.Alias
	}
	switch {
	case isNull(vn):
		return nil
	case vn.Kind == yaml.ScalarNode:
		return k.apply(c, vn.Value)
	case vn.Kind == yaml.SequenceNode && k.parseList != nil:
		items := make([]string, 0, len(vn.Content))
		for _, it := range vn.Content {
			if it.Kind == yaml.AliasNode && it.Alias != nil {
				it = it.Alias
			}
			if it.Kind != yaml.ScalarNode || isNull(it) {
				return k.invalid("", errors.New("list items must be plain values"))
			}
			items = append(items, it.Value)
		}
		return k.applyList(c, items)
	case vn.Kind == yaml.SequenceNode:
		return k.invalid("", errors.New("must be a single value, not a list"))
	}
	return k.invalid("", errors.New("must be a single value, not a mapping"))
}

// isNull reports whether n is a YAML null.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// suggest returns a hint for a key written in another style (jwtSecret,
// JWT-SECRET, HUB_JWT_SECRET), or "".
func suggest(s string) string {
	norm := func(s string) string {
		s = strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
		return strings.TrimPrefix(s, "hub")
	}
	want := norm(s)
	for i := range table {
		if norm(table[i].name) == want {
			return fmt.Sprintf(" (did you mean %q?)", table[i].name)
		}
	}
	return ""
}
