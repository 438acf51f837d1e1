package config

import "strings"

// Markdown renders the key table as a Markdown table (env | yaml | flag |
// default | meaning), for the operations guide.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| env | yaml | flag | default | meaning |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")
	for i := range table {
		k := &table[i]
		def := "empty"
		switch {
		case k.prose:
			def = cell(k.def)
		case k.def != "":
			def = code(k.def)
		}
		b.WriteString("| " + code(k.env()) + " | " + code(k.name) + " | " + code("--"+k.flag()) +
			" | " + def + " | " + cell(k.help) + " |\n")
	}
	return b.String()
}

// cell escapes the characters that would break a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// code renders s as inline code in a table cell.
func code(s string) string { return "`" + cell(s) + "`" }
