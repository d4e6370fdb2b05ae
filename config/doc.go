// Package config reads kproxy's one YAML configuration file: it parses it,
// validates it, describes what changed between two versions, and watches the
// file for changes. It knows nothing of sockets or Kafka.
//
// Guarantees other packages may rely on:
//
//   - Parse and Load return either a *Config that passed every validation
//     rule with all defaults applied, or an error listing every problem found
//     (errors.Join of *FieldError, one per line, each with the YAML path and,
//     when known, the line). Unknown keys are errors.
//   - In a returned Config every cluster reference (routes, produce/fetch of
//     each topic, canary fetch, group homes) is Source or Target and names a
//     configured cluster; TopicRoute.Produce and Fetch are always set;
//     Groups.Default and Advertise are set; every glob is well formed; no two
//     globs of one table are ambiguous (see GlobLength for precedence).
//   - A Config is never modified after Parse returns it; a reload builds a
//     new one. Hash identifies the file content it came from.
//   - Reloader and Watch never apply an invalid file: they log
//     "config reload rejected; keeping the last good config" with every
//     problem, and the caller keeps serving the previous config. apply is
//     called from the watching goroutine, one reload at a time.
//
// Diff and RestartRequired turn two configs into one-line descriptions for
// the reload log.
package config
