package control

import (
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/go-hclog"

	"github.com/kproxy/kproxy/config"
	"github.com/kproxy/kproxy/proxy"
	"github.com/kproxy/kproxy/secure"
)

// proxyListeners turns the config's listeners (the top-level listen
// included) into the proxy's, loading certificates and users files now: a
// listener whose certificate or users file does not load stops the start.
func proxyListeners(cfg *config.Config, log hclog.Logger) ([]proxy.Listener, error) {
	var out []proxy.Listener
	for _, l := range cfg.EffectiveListeners() {
		pl := proxy.Listener{Name: l.Name, Listen: l.Listen}
		adv := l.Advertise
		if adv == "" {
			adv = l.Listen
		}
		host, portS, err := net.SplitHostPort(adv)
		if err != nil {
			return nil, fmt.Errorf("listener %s advertise %q: %w", l.Name, adv, err)
		}
		port, _ := strconv.Atoi(portS)
		pl.AdvertiseHost, pl.AdvertisePort = host, int32(port)
		if t := l.TLS; t != nil {
			if pl.TLS, err = secure.ServerTLS(t, log.With("listener", l.Name)); err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.Name, err)
			}
			if pl.Principals, err = secure.NewPrincipalMapper(t.PrincipalMapping); err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.Name, err)
			}
		}
		if s := l.SASL; s != nil {
			var store *secure.UserStore
			if s.UsersFile != "" {
				if store, err = secure.OpenUserStore(s.UsersFile, log.With("listener", l.Name)); err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.Name, err)
				}
			}
			pl.SASL = secure.NewAuthenticator(s.Mechanisms, store)
			if o := s.OAuthBearer; o != nil {
				var v *secure.OAuthValidator
				var err error
				if o.JWKSURL != "" {
					v, err = secure.NewOAuthValidatorURL(o.JWKSURL, o.JWKSCAFile, o.JWKSRefresh, o.Issuer, o.Audience, o.ClockSkew, o.PrincipalClaim, log.With("listener", l.Name))
				} else {
					v, err = secure.NewOAuthValidator(o.JWKSFile, o.Issuer, o.Audience, o.ClockSkew, o.PrincipalClaim, log.With("listener", l.Name))
				}
				if err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.Name, err)
				}
				pl.SASL.WithOAuth(v)
			}
			pl.MaxReauth = s.MaxReauth
		}
		out = append(out, pl)
	}
	return out, nil
}

// proxyPolicy is the config's policy for the proxy; nil without one.
func proxyPolicy(cfg *config.Config) *proxy.Policy {
	if cfg.Policy == nil {
		return nil
	}
	p := &proxy.Policy{}
	for _, r := range cfg.Policy.Admin {
		p.Admin = append(p.Admin, proxy.AdminRule{Principals: r.Principals, Operations: r.Operations})
	}
	for _, r := range cfg.Policy.Groups {
		p.Groups = append(p.Groups, proxy.GroupRule{Principals: r.Principals, Groups: r.Groups, Operations: r.Operations})
	}
	for _, r := range cfg.Policy.TransactionalIDs {
		p.Txns = append(p.Txns, proxy.TxnRule{Principals: r.Principals, TransactionalIDs: r.IDs})
	}
	for _, r := range cfg.Policy.Topics {
		p.Topics = append(p.Topics, proxy.TopicRule{Principals: r.Principals, Topics: r.Topics, Operations: r.Operations})
	}
	return p
}
