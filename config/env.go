package config

import (
	"os"
	"regexp"
)

// envRef matches ${NAME} in an advertised address.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// lookupEnv is os.LookupEnv; tests replace it.
var lookupEnv = defaultLookupEnv

var defaultLookupEnv = os.LookupEnv

// expandAdvertise replaces ${NAME} in `advertise` and each listener's
// `advertise` with the environment variable NAME. Only the advertised
// addresses expand: they are the one thing that differs between the pods of
// a StatefulSet sharing one ConfigMap (each pod tells clients its own DNS
// name, e.g. ${POD_NAME}.kproxy-headless.ns.svc:9092). Expanding anything
// else (credentials above all) would let a config file print the
// environment through `kproxy validate` or `/status`, so nothing else does.
// An unset variable is a validation error naming the key.
func (c *Config) expandAdvertise(v *validator) {
	c.Advertise = expandEnv(v, top("advertise"), c.Advertise)
	// instance.id differs between pods for the same reason (a pod's name).
	c.Instance.ID = expandEnv(v, top("instance").key("id"), c.Instance.ID)
	for i := range c.Listeners {
		c.Listeners[i].Advertise = expandEnv(v, top("listeners").index(i).key("advertise"), c.Listeners[i].Advertise)
	}
}

func expandEnv(v *validator, p yamlPath, s string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		val, ok := lookupEnv(name)
		if !ok || val == "" {
			v.add(p, "refers to the environment variable %s, which is not set", name)
			return ref
		}
		return val
	})
}
