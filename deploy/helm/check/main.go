// Command check renders kproxy's Helm chart the way `helm template` does and
// validates what comes out, for `make test`:
//
//   - every document decodes strictly into its Kubernetes API type (the Go
//     types the API server's OpenAPI schemas are generated from): an unknown
//     field, a wrong type or an unknown kind fails;
//   - the objects agree with each other: Service selectors and the
//     StatefulSet's selector match the pod labels, Service target ports name
//     container ports, the StatefulSet's serviceName is a headless Service,
//     every volume mount has a volume or claim template, probes are set;
//   - the rendered kproxy.yaml passes `kproxy validate` (the binary given by
//     -kproxy), with the pod environment kproxy expands in advertise.
//
// kubeconform and `helm lint --strict` need JSON schemas fetched from the
// network; decoding into k8s.io/api checks the same fields offline.
//
// usage: go run . -chart ../kproxy -kproxy ../../../bin/kproxy [VALUES.yaml ...]
// With no values files it renders the chart's defaults and each ci/*.yaml.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	chartDir := flag.String("chart", "../kproxy", "the chart directory")
	kproxy := flag.String("kproxy", "", "the kproxy binary whose `validate` checks the rendered config (required)")
	flag.Parse()
	if *kproxy == "" {
		fmt.Fprintln(os.Stderr, "check: -kproxy is required")
		os.Exit(2)
	}
	files := flag.Args()
	if len(files) == 0 {
		ci, _ := filepath.Glob(filepath.Join(*chartDir, "ci", "*.yaml"))
		files = append([]string{""}, ci...)
	}
	failed := false
	for _, f := range files {
		name := f
		if name == "" {
			name = "(chart defaults)"
		}
		objs, err := checkValues(*chartDir, *kproxy, f)
		if err != nil {
			failed = true
			fmt.Printf("FAIL %s:\n%v\n", name, err)
			continue
		}
		fmt.Printf("ok   %s: %s\n", name, strings.Join(objs, ", "))
	}
	if err := checkReplicaRefusals(*chartDir); err != nil {
		failed = true
		fmt.Printf("FAIL replicaCount: %v\n", err)
	} else {
		fmt.Println("ok   replicaCount: 2 is refused with a reason without config.control")
	}
	if err := checkReplicatedCanaryRefused(*chartDir, *kproxy); err != nil {
		failed = true
		fmt.Printf("FAIL replicaCount with replicate: %v\n", err)
	} else {
		fmt.Println("ok   replicaCount: 2 with replicate: a route and a group home on the target (coordinated across pods) validate; a canary read of the copy renders, and kproxy validate refuses it with a reason")
	}
	if failed {
		os.Exit(1)
	}
}

// render is `helm template release CHART -f valuesFile --set extra`.
func render(chartDir, valuesFile string, extra map[string]any) (map[string]string, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := chartcommon.ReadValuesFile(valuesFile)
		if err != nil {
			return nil, err
		}
		vals = v
	}
	for k, v := range extra {
		vals[k] = v
	}
	top, err := chartutil.ToRenderValues(chrt, vals, chartcommon.ReleaseOptions{Name: "mig", Namespace: "kafka", IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Render(chrt, top)
}

// checkReplicaRefusals: several replicas without config.control fail to
// render, saying why (docs/ha.md). With control, replicate renders (the
// copy is fenced per partition: ci/instances-replicate-values.yaml).
func checkReplicaRefusals(chartDir string) error {
	_, err := render(chartDir, "", map[string]any{"replicaCount": 2})
	if err == nil || !strings.Contains(err.Error(), "needs config.control") {
		return fmt.Errorf("replicaCount 2 without control rendered (err %v); it must fail naming config.control", err)
	}
	return nil
}

// checkReplicatedCanaryRefused: several replicas that copy may route to
// the target and home groups there (cutovers and group moves run through
// the control topic, coordinated across pods) but may not read the copy
// for canary clients (not coordinated yet): all render, `kproxy validate`
// accepts the first two and refuses the third, saying why.
func checkReplicatedCanaryRefused(chartDir, kproxy string) error {
	validate := func(extra map[string]any) error {
		cfg := map[string]any{
			"clusters":    map[string]any{"source": map[string]any{"bootstrap": []any{"old-kafka:9092"}}, "target": map[string]any{"bootstrap": []any{"new-kafka:9092"}}},
			"routes":      map[string]any{"default": "target"},
			"replicate":   []any{"orders"},
			"replication": map[string]any{"reverse_after_cutover": true},
			"control":     map[string]any{},
		}
		maps.Copy(cfg, extra)
		out, err := render(chartDir, "", map[string]any{"replicaCount": 2, "config": cfg})
		if err != nil {
			return fmt.Errorf("did not render: %v", err)
		}
		var objs objects
		for file, text := range out {
			if !strings.HasSuffix(file, ".yaml") || strings.HasPrefix(filepath.Base(file), "_") {
				continue
			}
			for _, doc := range strings.Split(text, "\n---") {
				if strings.TrimSpace(stripComments(doc)) != "" {
					if _, err := decode(doc, &objs); err != nil {
						return err
					}
				}
			}
		}
		return objs.validateConfig(kproxy)
	}
	if err := validate(nil); err != nil {
		return fmt.Errorf("kproxy validate refused a route to the target with replicate: %v", err)
	}
	if err := validate(map[string]any{"groups": map[string]any{"default": "target"}}); err != nil {
		return fmt.Errorf("kproxy validate refused a group home on the target with replicate: %v", err)
	}
	err := validate(map[string]any{"routes": map[string]any{"default": "source", "topics": map[string]any{"orders": map[string]any{"canary": map[string]any{"fetch": "target", "percent": 10}}}}})
	if err == nil || !strings.Contains(err.Error(), "not coordinated across instances") {
		return fmt.Errorf("kproxy validate: %v; want a refusal saying canary reads are not coordinated across instances", err)
	}
	return nil
}

// replicaCount is the values file's replicaCount (the chart's default: 1).
func replicaCount(valuesFile string) (int32, error) {
	if valuesFile == "" {
		return 1, nil
	}
	v, err := chartcommon.ReadValuesFile(valuesFile)
	if err != nil {
		return 0, err
	}
	switch n := v["replicaCount"].(type) {
	case nil:
		return 1, nil
	case float64:
		return int32(n), nil
	case int64:
		return int32(n), nil
	case int:
		return int32(n), nil
	default:
		return 0, fmt.Errorf("replicaCount %v (%T)", n, n)
	}
}

// objects is one rendering, decoded.
type objects struct {
	configMaps []corev1.ConfigMap
	services   []corev1.Service
	sets       []appsv1.StatefulSet
	pdbs       []policyv1.PodDisruptionBudget
	accounts   []corev1.ServiceAccount
}

func checkValues(chartDir, kproxy, valuesFile string) ([]string, error) {
	out, err := render(chartDir, valuesFile, nil)
	if err != nil {
		return nil, err
	}
	var objs objects
	var names, errs []string
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, file := range keys {
		if !strings.HasSuffix(file, ".yaml") || strings.HasPrefix(filepath.Base(file), "_") {
			continue
		}
		for i, doc := range strings.Split(out[file], "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			kind, err := decode(doc, &objs)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s document %d: %v", file, i, err))
				continue
			}
			names = append(names, kind)
		}
	}
	replicas, err := replicaCount(valuesFile)
	if err != nil {
		return nil, err
	}
	errs = append(errs, objs.consistent(replicas)...)
	if err := objs.validateConfig(kproxy); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return names, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode decodes one document strictly into the type its apiVersion and
// kind name.
func decode(doc string, objs *objects) (string, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
		return "", err
	}
	id := head.APIVersion + "/" + head.Kind
	var err error
	switch id {
	case "v1/ConfigMap":
		err = decodeInto(doc, &objs.configMaps)
	case "v1/Service":
		err = decodeInto(doc, &objs.services)
	case "v1/ServiceAccount":
		err = decodeInto(doc, &objs.accounts)
	case "apps/v1/StatefulSet":
		err = decodeInto(doc, &objs.sets)
	case "policy/v1/PodDisruptionBudget":
		err = decodeInto(doc, &objs.pdbs)
	default:
		return "", fmt.Errorf("unexpected kind %q", id)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", id, err)
	}
	return head.Kind, nil
}

// decodeInto decodes doc strictly into a T and appends it to list (also
// when decoding fails: the cross-object checks still see what decoded).
func decodeInto[T any](doc string, list *[]T) error {
	var o T
	err := yaml.UnmarshalStrict([]byte(doc), &o)
	*list = append(*list, o)
	return err
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// consistent checks what the API server would accept object by object but a
// working release also needs across objects.
func (o *objects) consistent(replicas int32) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(o.sets) != 1 {
		bad("want one StatefulSet, got %d", len(o.sets))
		return errs
	}
	ss := o.sets[0]
	pod := ss.Spec.Template
	podLabels := map[string]string{}
	for k, v := range pod.Labels {
		podLabels[k] = v
	}
	if ss.Spec.Selector == nil || !matches(ss.Spec.Selector.MatchLabels, podLabels) {
		bad("StatefulSet selector %v does not match pod labels %v", ss.Spec.Selector, podLabels)
	}
	if len(pod.Spec.Containers) != 1 {
		bad("want one container, got %d", len(pod.Spec.Containers))
		return errs
	}
	c := pod.Spec.Containers[0]
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	headless := false
	for _, s := range o.services {
		// A per-pod Service also selects the StatefulSet's pod-name label,
		// which only the running pod carries.
		sel := map[string]string{}
		for k, v := range s.Spec.Selector {
			if k != "statefulset.kubernetes.io/pod-name" {
				sel[k] = v
			}
		}
		if !matches(sel, podLabels) {
			bad("Service %s selects %v, which no pod carries", s.Name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			if !ports[p.TargetPort.StrVal] {
				bad("Service %s targets port %q, which the container does not name", s.Name, p.TargetPort.StrVal)
			}
		}
		if s.Name == ss.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = true
		}
	}
	if !headless {
		bad("StatefulSet serviceName %q is not a headless Service of this release", ss.Spec.ServiceName)
	}
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = true
	}
	for _, t := range ss.Spec.VolumeClaimTemplates {
		vols[t.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			bad("volume mount %s has no volume", m.Name)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 || p.Exec.Command[0] != "/kproxy" {
			bad("%s probe must run /kproxy probe, got %+v", name, p)
		}
	}
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != replicas {
		bad("replicas %v, want the values' %d", ss.Spec.Replicas, replicas)
	}
	if replicas > 1 {
		// Several instances of one virtual cluster (docs/ha.md): each pod
		// is its own instance, and a drain takes at most one at a time.
		if len(o.configMaps) == 1 {
			var cfg struct {
				Instance struct {
					ID string `json:"id"`
				} `json:"instance"`
				Control map[string]any `json:"control"`
			}
			if err := yaml.Unmarshal([]byte(o.configMaps[0].Data["kproxy.yaml"]), &cfg); err != nil {
				bad("kproxy.yaml: %v", err)
			}
			if cfg.Instance.ID != "${POD_NAME}" || cfg.Control == nil {
				bad("with %d replicas the config needs control: and instance.id ${POD_NAME} (the pod's ordinal name); got id %q, control %v", replicas, cfg.Instance.ID, cfg.Control)
			}
		}
		if len(o.pdbs) != 1 || o.pdbs[0].Spec.MaxUnavailable == nil || o.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
			bad("with %d replicas a PodDisruptionBudget of maxUnavailable 1 is needed", replicas)
		}
	}
	for _, p := range o.pdbs {
		if p.Spec.Selector == nil || !matches(p.Spec.Selector.MatchLabels, podLabels) {
			bad("PodDisruptionBudget %s selects no pod", p.Name)
		}
	}
	return errs
}

// validateConfig runs `kproxy validate` on the rendered kproxy.yaml, with the
// environment the pod gives kproxy.
func (o *objects) validateConfig(kproxy string) error {
	if len(o.configMaps) != 1 {
		return fmt.Errorf("want one ConfigMap, got %d", len(o.configMaps))
	}
	data, ok := o.configMaps[0].Data["kproxy.yaml"]
	if !ok {
		return errors.New("the ConfigMap has no kproxy.yaml")
	}
	dir, err := os.MkdirTemp("", "kproxy-helm-check")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "kproxy.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(kproxy, "validate", "-c", path)
	cmd.Env = append(os.Environ(), "POD_NAME=mig-kproxy-0", "POD_NAMESPACE=kafka", "HOST_IP=10.0.0.7")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kproxy validate of the rendered config: %v\n%s\n--- kproxy.yaml\n%s", err, out.String(), data)
	}
	// The advertised address must be the pod's own DNS name, not a template.
	if !strings.Contains(data, "${POD_NAME}") {
		return errors.New("advertise does not use ${POD_NAME}: every pod would advertise the same address")
	}
	return nil
}
