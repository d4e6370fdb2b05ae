package control

// ACLs of replicated topics and of groups, as the source holds them: what
// replication.sync.acls creates on the target (sync.go) and what the acls
// plan gate looks for on the new home (plan.go). A cluster without an
// authorizer answers DescribeAcls with SECURITY_DISABLED: there is nothing
// to copy or compare, and both say so instead of failing.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// aclEntry is one ACL binding: a resource pattern and one access rule.
type aclEntry struct {
	resType    kmsg.ACLResourceType
	name       string
	pattern    kmsg.ACLResourcePatternType
	principal  string
	host       string
	operation  kmsg.ACLOperation
	permission kmsg.ACLPermissionType
}

func (a aclEntry) String() string {
	return fmt.Sprintf("%s %s:%s %s %s %s from %s", a.permission, a.resType, a.name, a.pattern, a.principal, a.operation, a.host)
}

// errNoAuthorizer: the cluster has no authorizer (SECURITY_DISABLED).
var errNoAuthorizer = errors.New("the cluster has no authorizer (SECURITY_DISABLED)")

// describeACLs lists every ACL of one resource type on a cluster (any name,
// pattern, principal, host, operation and permission).
func describeACLs(ctx context.Context, cl *kgo.Client, rt kmsg.ACLResourceType) ([]aclEntry, error) {
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType = rt
	req.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
	req.Operation = kmsg.ACLOperationAny
	req.PermissionType = kmsg.ACLPermissionTypeAny
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		if errors.Is(err, kerr.SecurityDisabled) {
			return nil, errNoAuthorizer
		}
		msg := ""
		if resp.ErrorMessage != nil {
			msg = ": " + *resp.ErrorMessage
		}
		return nil, fmt.Errorf("describing ACLs: %w%s", err, msg)
	}
	var out []aclEntry
	for _, r := range resp.Resources {
		for _, a := range r.ACLs {
			out = append(out, aclEntry{resType: r.ResourceType, name: r.ResourceName, pattern: r.ResourcePatternType,
				principal: a.Principal, host: a.Host, operation: a.Operation, permission: a.PermissionType})
		}
	}
	return out, nil
}

// aclApplies says whether a topic ACL's resource pattern covers topic.
func aclApplies(a aclEntry, topic string) bool {
	switch a.pattern {
	case kmsg.ACLResourcePatternTypeLiteral:
		return a.name == topic || a.name == "*"
	case kmsg.ACLResourcePatternTypePrefixed:
		return strings.HasPrefix(topic, a.name)
	}
	return false
}

// topicACLs are the ACLs among all that cover at least one of topics.
func topicACLs(all []aclEntry, topics []string) []aclEntry {
	var out []aclEntry
	for _, a := range all {
		for _, t := range topics {
			if aclApplies(a, t) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// missingACLs are the entries of want that have is lacks.
func missingACLs(want, have []aclEntry) []aclEntry {
	set := make(map[aclEntry]bool, len(have))
	for _, a := range have {
		set[a] = true
	}
	var out []aclEntry
	for _, a := range want {
		if !set[a] {
			out = append(out, a)
			set[a] = true
		}
	}
	return out
}

// createACLs creates entries on a cluster and returns, per entry, nil or
// why it was not created.
func createACLs(ctx context.Context, cl *kgo.Client, entries []aclEntry) ([]error, error) {
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range entries {
		c := kmsg.NewCreateACLsRequestCreation()
		c.ResourceType, c.ResourceName, c.ResourcePatternType = a.resType, a.name, a.pattern
		c.Principal, c.Host, c.Operation, c.PermissionType = a.principal, a.host, a.operation, a.permission
		req.Creations = append(req.Creations, c)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != len(entries) {
		return nil, fmt.Errorf("CreateAcls answered %d results for %d creations", len(resp.Results), len(entries))
	}
	out := make([]error, len(entries))
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			if r.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", err, *r.ErrorMessage)
			}
			out[i] = err
		}
	}
	return out, nil
}
