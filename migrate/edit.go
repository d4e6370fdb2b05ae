package migrate

// Config edits, on the YAML node tree so the operator's comments, key
// order and the rest of the file stay as they were. The edited bytes are
// parsed with config.Parse before they are returned: the walk never writes
// a file kproxy would reject as invalid.

import (
	"bytes"
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/config"
)

// edit returns the config file raw with step s applied.
func edit(raw []byte, s Step) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the config file is not a YAML mapping")
	}
	root := doc.Content[0]
	switch s.Kind {
	case StepCanary:
		topics := mapping(mapping(root, "routes"), "topics")
		for _, t := range s.Topics {
			entry := value(topics, t)
			if entry == nil || entry.Kind == yaml.ScalarNode {
				// `orders: source` (or no entry: routes.default)
				// becomes a map that keeps where it routes.
				m := &yaml.Node{Kind: yaml.MappingNode}
				if entry != nil {
					set(m, "route", scalar(entry.Value))
				}
				setValue(topics, t, m)
				entry = m
			}
			canary := &yaml.Node{Kind: yaml.MappingNode}
			set(canary, "fetch", scalar(string(config.Target)))
			set(canary, "percent", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(s.Percent)})
			set(entry, "canary", canary)
		}
	case StepFlip:
		topics := mapping(mapping(root, "routes"), "topics")
		for _, t := range s.Topics {
			setValue(topics, t, scalar(string(config.Target)))
		}
	case StepGroups:
		groups := mapping(root, "groups")
		for _, g := range s.Groups {
			setValue(groups, g, scalar(string(config.Target)))
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	if _, err := config.Parse(b.Bytes()); err != nil {
		return nil, fmt.Errorf("the config after %q would be invalid: %w", s, err)
	}
	return b.Bytes(), nil
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

// value is key's value node in mapping m, or nil.
func value(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setValue sets key to v in mapping m, appending the key when absent.
func setValue(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalar(key), v)
}

func set(m *yaml.Node, key string, v *yaml.Node) { setValue(m, key, v) }

// mapping returns key's mapping in m, creating it (or replacing an empty
// value) when needed.
func mapping(m *yaml.Node, key string) *yaml.Node {
	if v := value(m, key); v != nil && v.Kind == yaml.MappingNode {
		if v.Style == yaml.FlowStyle {
			v.Style = 0 // entries added below read better in block style
		}
		return v
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	setValue(m, key, n)
	return n
}
