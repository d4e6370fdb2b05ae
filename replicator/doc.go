// Package replicator will copy source partitions to the target batch for
// batch and own the exact offset map (issue 4). It is empty today.
package replicator
