package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lbha/lbha/dest"
)

// Load reads and parses the configuration file at path. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: read: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a YAML configuration, fills in defaults and validates it.
// name is used in problem positions. Every problem, syntactic or semantic,
// is returned at once in a *ValidationError; on any problem the
// configuration is nil.
func Parse(name string, data []byte) (*Config, error) {
	c, d := decode(name, data)
	if c != nil && !d.over {
		var vs problems
		c.validate(&vs)
		d.locate(vs)
	}
	if err := d.ps.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseServices decodes a configuration document, or a fragment holding
// only a services list, and validates its services alone. Other sections
// are decoded, so their syntax errors and unknown keys are still reported,
// but their semantic checks are skipped: the services of a director's
// configuration, or the output of ipvsadm import, can be read on their own.
func ParseServices(name string, data []byte) ([]Service, error) {
	c, d := decode(name, data)
	if c != nil && !d.over {
		var vs problems
		validateServices(&vs, "services", c.Services)
		d.locate(vs)
	}
	if err := d.ps.err(); err != nil {
		return nil, err
	}
	return c.Services, nil
}

// maxVisits bounds the nodes one document may make the decoder visit.
// Aliases let a small document name a subtree many times over; without a
// bound a few hundred bytes could take exponential time.
const maxVisits = 1 << 20

// decoder walks a yaml.Node tree into the model, reporting located problems
// and remembering where each model path came from so that the validator's
// problems can be located too.
type decoder struct {
	file   string
	ps     problems
	values map[string]*yaml.Node // model path -> value node
	bad    []string              // paths whose value could not be decoded
	root   *yaml.Node
	visits int
	over   bool
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func decode(name string, data []byte) (c *Config, d *decoder) {
	d = &decoder{file: name, values: map[string]*yaml.Node{}}
	defer func() {
		// yaml.v3 has panicked on hostile input before (CVE-2022-28948);
		// a configuration error must never become a crash.
		if r := recover(); r != nil {
			c = nil
			d.ps = append(d.ps, Problem{Pos: Pos{File: name, Line: 1, Col: 1}, Msg: fmt.Sprintf("malformed YAML: %v", r)})
		}
	}()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	switch {
	case errors.Is(err, io.EOF):
		doc = yaml.Node{} // empty file: every section takes its defaults
	case err != nil:
		d.syntax(err)
		return nil, d
	default:
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			d.errAt(&extra, "", "a configuration is a single YAML document")
			return nil, d
		} else if !errors.Is(err, io.EOF) {
			d.syntax(err)
			return nil, d
		}
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	d.root = root
	c = Default()
	if root.Kind == 0 || isNull(root) {
		return c, d
	}
	d.config(root, c)
	return c, d
}

// syntax reports a yaml.v3 error. Its parser names a line but no column.
func (d *decoder) syntax(err error) {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	pos := Pos{File: d.file, Line: line, Col: 1}
	if line == 0 {
		pos.Line = 1
	}
	d.ps = append(d.ps, Problem{Pos: pos, Msg: "malformed YAML: " + msg})
}

// locate gives validator problems the position of their path's value, or
// of the nearest enclosing value that the file has, and drops problems
// about values the decoder already reported as undecodable.
func (d *decoder) locate(vs problems) {
	for _, p := range vs {
		skip := false
		for _, b := range d.bad {
			if under(p.Path, b) {
				skip = true
				break
			}
		}
		if skip {
			continue
		}
		n := d.root
		for path := p.Path; ; path = parentPath(path) {
			if v, ok := d.values[path]; ok {
				n = v
				break
			}
			if path == "" {
				break
			}
		}
		p.Pos = d.pos(n)
		d.ps = append(d.ps, p)
	}
}

func (d *decoder) pos(n *yaml.Node) Pos {
	if n == nil || n.Line == 0 {
		return Pos{File: d.file, Line: 1, Col: 1}
	}
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) errAt(n *yaml.Node, path, format string, args ...any) {
	d.ps = append(d.ps, Problem{Pos: d.pos(n), Path: path, Msg: fmt.Sprintf(format, args...)})
	d.bad = append(d.bad, path)
}

// resolve follows aliases and charges the visit budget. It returns nil
// once the budget is spent.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		n = n.Alias
	}
	d.visits++
	if d.visits > maxVisits {
		if !d.over {
			d.over = true
			d.errAt(n, "", "document too complex: more than %d nodes after expanding aliases", maxVisits)
		}
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return fmt.Sprintf("the string %q", n.Value)
	}
	return "a document"
}

// key is one accepted key of a mapping and what to do with its value.
type key struct {
	name string
	fn   func(v *yaml.Node, path string)
}

// mapping decodes a mapping node, calling each known key's function with
// the resolved value and reporting unknown and repeated keys. Null values
// count as absent. It returns the set of keys present.
func (d *decoder) mapping(n *yaml.Node, path string, keys []key) map[string]bool {
	present := map[string]bool{}
	n = d.resolve(n)
	if n == nil {
		return present
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "want a mapping, got %s", kindName(n))
		return present
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := d.resolve(n.Content[i]), n.Content[i+1]
		if kn == nil {
			return present
		}
		if kn.Kind != yaml.ScalarNode {
			d.errAt(kn, path, "keys must be strings, got %s", kindName(kn))
			continue
		}
		name := kn.Value
		kp := field(path, name)
		if prev, dup := seen[name]; dup {
			d.errAt(kn, kp, "key %q already set at line %d", name, prev.Line)
			continue
		}
		seen[name] = kn
		var fn func(*yaml.Node, string)
		for _, k := range keys {
			if k.name == name {
				fn = k.fn
				break
			}
		}
		if fn == nil {
			d.errAt(kn, kp, "unknown key%s", suggest(name, keys))
			continue
		}
		d.values[kp] = vn
		rv := d.resolve(vn)
		if rv == nil || isNull(rv) {
			continue
		}
		d.values[kp] = rv
		present[name] = true
		fn(rv, kp)
	}
	return present
}

// suggest names the closest known key, to catch typos.
func suggest(name string, keys []key) string {
	best, dist := "", 3
	for _, k := range keys {
		if dd := editDistance(name, k.name); dd < dist {
			best, dist = k.name, dd
		}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (want one of " + knownNames(names) + ")"
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
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

// list decodes a sequence, calling fn with each resolved, non-null item.
func (d *decoder) list(n *yaml.Node, path string, fn func(i int, v *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		d.errAt(n, path, "want a list, got %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		ip := index(path, i)
		d.values[ip] = item
		rv := d.resolve(item)
		if rv == nil {
			return
		}
		d.values[ip] = rv
		if isNull(rv) {
			d.errAt(rv, ip, "empty list item")
			continue
		}
		fn(i, rv, ip)
	}
}

func (d *decoder) scalar(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode {
		d.errAt(n, path, "want a single value, got %s", kindName(n))
		return false
	}
	return true
}

func (d *decoder) str(n *yaml.Node, path string, dst *string) {
	if d.scalar(n, path) {
		*dst = n.Value
	}
}

func (d *decoder) int64(n *yaml.Node, path string) (int64, bool) {
	if !d.scalar(n, path) {
		return 0, false
	}
	if n.Tag != "!!int" {
		d.errAt(n, path, "want an integer, got %s", kindName(n))
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil {
		d.errAt(n, path, "%s is not an integer in range", n.Value)
		return 0, false
	}
	return v, true
}

// int decodes an integer; range checks are the validator's.
func (d *decoder) int(n *yaml.Node, path string, dst *int) {
	v, ok := d.int64(n, path)
	if !ok {
		return
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		// Larger values are out of every range the model has; saying so
		// here keeps them from wrapping on 32-bit platforms.
		d.errAt(n, path, "%d is out of range", v)
		return
	}
	*dst = int(v)
}

// intRange decodes an integer that the model's type cannot hold outside
// lo..hi, so the range is checked here.
func (d *decoder) intRange(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	v, ok := d.int64(n, path)
	if !ok {
		return 0, false
	}
	if v < lo || v > hi {
		d.errAt(n, path, "%d is out of range %d..%d", v, lo, hi)
		return 0, false
	}
	return v, true
}

func (d *decoder) bool(n *yaml.Node, path string, dst *bool) {
	if !d.scalar(n, path) {
		return
	}
	if n.Tag == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			*dst = true
			return
		case "false":
			*dst = false
			return
		}
	}
	d.errAt(n, path, "want true or false, got %s", kindName(n))
}

func (d *decoder) duration(n *yaml.Node, path string, dst *time.Duration) {
	if !d.scalar(n, path) {
		return
	}
	if n.Tag != "!!str" {
		d.errAt(n, path, "want a duration with a unit, e.g. \"100ms\" or \"2s\", got %s", kindName(n))
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.errAt(n, path, "%q is not a duration (e.g. \"100ms\", \"2s\")", n.Value)
		return
	}
	*dst = v
}

func (d *decoder) addr(n *yaml.Node, path string, dst *netip.Addr) {
	if !d.scalar(n, path) {
		return
	}
	a, err := netip.ParseAddr(n.Value)
	if err != nil {
		d.errAt(n, path, "%q is not an IP address", n.Value)
		return
	}
	*dst = a
}

// addrPort decodes "ip:port", "[ip6]:port", or a bare address when
// portOptional; hasPort reports which.
func (d *decoder) addrPort(n *yaml.Node, path string, portOptional bool) (ap netip.AddrPort, hasPort, ok bool) {
	if !d.scalar(n, path) {
		return ap, false, false
	}
	s := n.Value
	if v, err := netip.ParseAddrPort(s); err == nil {
		return v, true, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if portOptional {
			return netip.AddrPortFrom(a, 0), false, true
		}
		d.errAt(n, path, "%q has no port (want ip:port, or [ipv6]:port)", s)
		return ap, false, false
	}
	want := "ip:port or [ipv6]:port"
	if portOptional {
		want = "ip, ip:port or [ipv6]:port"
	}
	d.errAt(n, path, "%q is not a valid address (want %s)", s, want)
	return ap, false, false
}

// enum decodes a name from a fixed set.
func enum[T any](d *decoder, n *yaml.Node, path, what string, names []string, vals []T, dst *T) bool {
	if !d.scalar(n, path) {
		return false
	}
	for i, name := range names {
		if n.Value == name {
			*dst = vals[i]
			return true
		}
	}
	d.errAt(n, path, "unknown %s %q (want %s)", what, n.Value, knownNames(names))
	return false
}

func (d *decoder) strList(n *yaml.Node, path string, dst *[]string) {
	d.list(n, path, func(_ int, v *yaml.Node, ip string) {
		var s string
		if d.scalar(v, ip) {
			s = v.Value
		}
		*dst = append(*dst, s)
	})
}

func (d *decoder) config(root *yaml.Node, c *Config) {
	d.mapping(root, "", []key{
		{"node", func(v *yaml.Node, p string) { d.node(v, p, &c.Node) }},
		{"cluster", func(v *yaml.Node, p string) { d.cluster(v, p, &c.Cluster) }},
		{"api", func(v *yaml.Node, p string) {
			d.mapping(v, p, []key{
				{"socket", func(v *yaml.Node, p string) { d.str(v, p, &c.API.Socket) }},
				{"metrics_address", func(v *yaml.Node, p string) { d.str(v, p, &c.API.MetricsAddress) }},
				{"tcp_address", func(v *yaml.Node, p string) { d.str(v, p, &c.API.TCPAddress) }},
				{"token_file", func(v *yaml.Node, p string) { d.str(v, p, &c.API.TokenFile) }},
			})
		}},
		{"dataplane", func(v *yaml.Node, p string) {
			var s string
			d.str(v, p, &s)
			c.Dataplane = Dataplane(s)
		}},
		{"dataplane_options", func(v *yaml.Node, p string) {
			o := &c.DataplaneOptions
			d.mapping(v, p, []key{
				{"expire_quiescent_template", func(v *yaml.Node, p string) { d.bool(v, p, &o.ExpireQuiescentTemplate) }},
				{"on_standby", func(v *yaml.Node, p string) {
					enum(d, v, p, "standby action", []string{"close", "drain"}, []StandbyAction{StandbyClose, StandbyDrain}, &o.OnStandby)
				}},
				{"drain_timeout", func(v *yaml.Node, p string) { d.duration(v, p, &o.DrainTimeout) }},
			})
		}},
		{"vips", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				var vip VIP
				d.mapping(v, ip, []key{
					{"address", func(v *yaml.Node, p string) {
						if !d.scalar(v, p) {
							return
						}
						pfx, err := netip.ParsePrefix(v.Value)
						if err != nil {
							d.errAt(v, p, "%q is not an address with a prefix length (e.g. 192.0.2.100/24, 2001:db8::100/64)", v.Value)
							return
						}
						vip.Address = pfx
					}},
					{"interface", func(v *yaml.Node, p string) { d.str(v, p, &vip.Interface) }},
				})
				c.VIPs = append(c.VIPs, vip)
			})
		}},
		{"sync", func(v *yaml.Node, p string) { d.sync(v, p, &c.Sync) }},
		{"services", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				c.Services = append(c.Services, d.service(v, ip))
			})
		}},
	})
}

func (d *decoder) role(v *yaml.Node, p string, dst *Role) {
	var s string
	d.str(v, p, &s)
	*dst = Role(s) // the validator names unknown roles
}

func (d *decoder) node(v *yaml.Node, p string, n *Node) {
	present := d.mapping(v, p, []key{
		{"name", func(v *yaml.Node, p string) { d.str(v, p, &n.Name) }},
		{"role", func(v *yaml.Node, p string) { d.role(v, p, &n.Role) }},
		{"priority", func(v *yaml.Node, p string) { d.int(v, p, &n.Priority) }},
		{"data_dir", func(v *yaml.Node, p string) { d.str(v, p, &n.DataDir) }},
		{"bind_address", func(v *yaml.Node, p string) { d.addr(v, p, &n.BindAddress) }},
	})
	if n.Role == RoleWitness && !present["priority"] {
		n.Priority = 0 // the director default does not apply
	}
}

func (d *decoder) cluster(v *yaml.Node, p string, cl *Cluster) {
	d.mapping(v, p, []key{
		{"peers", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				var peer Peer
				d.mapping(v, ip, []key{
					{"name", func(v *yaml.Node, p string) { d.str(v, p, &peer.Name) }},
					{"address", func(v *yaml.Node, p string) { d.addr(v, p, &peer.Address) }},
					{"role", func(v *yaml.Node, p string) { d.role(v, p, &peer.Role) }},
				})
				cl.Peers = append(cl.Peers, peer)
			})
		}},
		{"raft_port", func(v *yaml.Node, p string) { d.int(v, p, &cl.RaftPort) }},
		{"gossip_port", func(v *yaml.Node, p string) { d.int(v, p, &cl.GossipPort) }},
		{"api_port", func(v *yaml.Node, p string) { d.int(v, p, &cl.APIPort) }},
		{"timing", func(v *yaml.Node, p string) {
			d.mapping(v, p, []key{
				{"heartbeat", func(v *yaml.Node, p string) { d.duration(v, p, &cl.Timing.Heartbeat) }},
				{"election", func(v *yaml.Node, p string) { d.duration(v, p, &cl.Timing.Election) }},
				{"lease", func(v *yaml.Node, p string) { d.duration(v, p, &cl.Timing.Lease) }},
			})
		}},
		{"preempt", func(v *yaml.Node, p string) { d.bool(v, p, &cl.Preempt) }},
		{"preempt_delay", func(v *yaml.Node, p string) { d.duration(v, p, &cl.PreemptDelay) }},
		{"track_interfaces", func(v *yaml.Node, p string) { d.strList(v, p, &cl.TrackInterfaces) }},
		{"check_commands", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				cc := DefaultLocalCheck()
				d.mapping(v, ip, []key{
					{"name", func(v *yaml.Node, p string) { d.str(v, p, &cc.Name) }},
					{"command", func(v *yaml.Node, p string) { d.str(v, p, &cc.Command) }},
					{"interval", func(v *yaml.Node, p string) { d.duration(v, p, &cc.Interval) }},
					{"timeout", func(v *yaml.Node, p string) { d.duration(v, p, &cc.Timeout) }},
				})
				cl.CheckCommands = append(cl.CheckCommands, cc)
			})
		}},
		{"notify_command", func(v *yaml.Node, p string) { d.str(v, p, &cl.NotifyCommand) }},
		{"gossip_key_file", func(v *yaml.Node, p string) { d.str(v, p, &cl.GossipKeyFile) }},
		{"tls", func(v *yaml.Node, p string) {
			t := &TLS{}
			d.mapping(v, p, []key{
				{"cert_file", func(v *yaml.Node, p string) { d.str(v, p, &t.CertFile) }},
				{"key_file", func(v *yaml.Node, p string) { d.str(v, p, &t.KeyFile) }},
				{"ca_file", func(v *yaml.Node, p string) { d.str(v, p, &t.CAFile) }},
			})
			cl.TLS = t
		}},
	})
}

func (d *decoder) sync(v *yaml.Node, p string, s *Sync) {
	d.mapping(v, p, []key{
		{"interface", func(v *yaml.Node, p string) { d.str(v, p, &s.Interface) }},
		{"group", func(v *yaml.Node, p string) { d.addr(v, p, &s.Group) }},
		{"port", func(v *yaml.Node, p string) { d.int(v, p, &s.Port) }},
		{"syncid", func(v *yaml.Node, p string) { d.int(v, p, &s.SyncID) }},
		{"maxlen", func(v *yaml.Node, p string) { d.int(v, p, &s.MaxLen) }},
		{"ttl", func(v *yaml.Node, p string) { d.int(v, p, &s.TTL) }},
		{"auth_key_file", func(v *yaml.Node, p string) { d.str(v, p, &s.AuthKeyFile) }},
		{"flush_interval", func(v *yaml.Node, p string) { d.duration(v, p, &s.FlushInterval) }},
		{"version", func(v *yaml.Node, p string) { d.int(v, p, &s.Version) }},
	})
}

var (
	protoNames   = []string{"tcp", "udp", "sctp"}
	protoVals    = []Protocol{TCP, UDP, SCTP}
	familyNames  = []string{"inet", "inet6"}
	familyVals   = []Family{Inet, Inet6}
	forwardNames = []string{"masq", "route", "tunnel"}
	forwardVals  = []dest.Method{dest.Masq, dest.Route, dest.Tunnel}
	tunnelNames  = []string{"ipip", "gue", "gre"}
	tunnelVals   = []TunnelType{TunnelIPIP, TunnelGUE, TunnelGRE}
	csumNames    = []string{"nocsum", "csum", "remcsum"}
	csumVals     = []TunnelChecksum{TunnelNoChecksum, TunnelChecksumOn, TunnelRemoteChecksum}
)

type flagRef struct {
	name string
	node *yaml.Node
	path string
}

func (d *decoder) service(v *yaml.Node, sp string) Service {
	s := DefaultService()
	var flags []flagRef
	var rsNoPort []bool
	sorryNoPort := false
	var hcPresent map[string]bool
	var familyNode *yaml.Node
	present := d.mapping(v, sp, []key{
		{"name", func(v *yaml.Node, p string) { d.str(v, p, &s.Name) }},
		{"protocol", func(v *yaml.Node, p string) { enum(d, v, p, "protocol", protoNames, protoVals, &s.Protocol) }},
		{"address", func(v *yaml.Node, p string) {
			// A missing port means port 0, as in ipvsadm.
			if ap, _, ok := d.addrPort(v, p, true); ok {
				s.Address = ap
			}
		}},
		{"fwmark", func(v *yaml.Node, p string) {
			if m, ok := d.intRange(v, p, 1, math.MaxUint32); ok {
				s.FWMark = uint32(m)
			} else {
				// The service still names its identity; do not also
				// report it as missing an address.
				d.bad = append(d.bad, field(sp, "address"))
			}
		}},
		{"family", func(v *yaml.Node, p string) {
			familyNode = v
			enum(d, v, p, "family", familyNames, familyVals, &s.Family)
		}},
		{"scheduler", func(v *yaml.Node, p string) { d.str(v, p, &s.Scheduler) }},
		{"scheduler_flags", func(v *yaml.Node, p string) {
			if v.Kind == yaml.ScalarNode && v.Tag == "!!str" {
				// ipvsadm's comma-separated form.
				for _, name := range strings.Split(v.Value, ",") {
					flags = append(flags, flagRef{strings.TrimSpace(name), v, p})
				}
				return
			}
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				if d.scalar(v, ip) {
					flags = append(flags, flagRef{v.Value, v, ip})
				}
			})
		}},
		{"persistence", func(v *yaml.Node, p string) {
			pers := DefaultPersistence()
			d.persistence(v, p, &pers)
			s.Persistence = &pers
		}},
		{"one_packet", func(v *yaml.Node, p string) { d.bool(v, p, &s.OnePacket) }},
		{"real_servers", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, v *yaml.Node, ip string) {
				rs, noPort := d.realServer(v, ip)
				s.RealServers = append(s.RealServers, rs)
				rsNoPort = append(rsNoPort, noPort)
			})
		}},
		{"health_check", func(v *yaml.Node, p string) {
			hc := DefaultHealthCheck()
			hcPresent = d.healthCheck(v, p, &hc)
			s.HealthCheck = &hc
		}},
		{"sorry_server", func(v *yaml.Node, p string) {
			if ap, hasPort, ok := d.addrPort(v, p, true); ok {
				s.SorryServer, sorryNoPort = ap, !hasPort
			}
		}},
	})

	if present["family"] && !present["fwmark"] {
		d.errAt(familyNode, field(sp, "family"), "applies to fwmark services only; an address service has its address's family")
	}
	if s.FWMark != 0 && s.Family == 0 {
		s.Family = Inet
	}
	for _, f := range flags {
		bit, err := ParseSchedFlag(s.Scheduler, f.name)
		if err != nil {
			d.errAt(f.node, f.path, "%v", err)
			continue
		}
		s.SchedFlags |= bit
	}
	// Ports left out take the service port, as ipvsadm -r does; a fwmark
	// service has none, so they stay 0.
	port := s.Address.Port()
	for i, noPort := range rsNoPort {
		if noPort {
			s.RealServers[i].Address = netip.AddrPortFrom(s.RealServers[i].Address.Addr(), port)
		}
	}
	if sorryNoPort {
		s.SorryServer = netip.AddrPortFrom(s.SorryServer.Addr(), port)
	}
	if p := s.Persistence; p != nil {
		if s.AddrFamily() == Inet && !p.Netmask.IsValid() {
			p.Netmask = HostMask4
		}
		if s.AddrFamily() == Inet6 && p.Prefix == 0 {
			p.Prefix = 128
		}
	}
	if hc := s.HealthCheck; hc != nil && (hc.Type == CheckHTTP || hc.Type == CheckHTTPS) {
		if !hcPresent["path"] {
			hc.Path = "/"
		}
		if !hcPresent["expect_status"] {
			hc.ExpectStatus = 200
		}
	}
	return s
}

func (d *decoder) persistence(v *yaml.Node, pp string, p *Persistence) {
	d.mapping(v, pp, []key{
		{"timeout", func(v *yaml.Node, path string) {
			if !d.scalar(v, path) {
				return
			}
			if v.Tag == "!!int" {
				// Whole seconds, as ipvsadm -p takes them.
				secs, ok := d.int64(v, path)
				if !ok {
					return
				}
				if secs > int64(MaxPersistenceTimeout/time.Second) {
					d.errAt(v, path, "%d s exceeds the maximum of 31 days (2678400 s)", secs)
					return
				}
				p.Timeout = time.Duration(secs) * time.Second
				return
			}
			d.duration(v, path, &p.Timeout)
		}},
		{"netmask", func(v *yaml.Node, path string) {
			var a netip.Addr
			d.addr(v, path, &a)
			if a.IsValid() && !a.Is4() {
				d.errAt(v, path, "%s is not a dotted IPv4 netmask", a)
				return
			}
			p.Netmask = a
		}},
		{"prefix", func(v *yaml.Node, path string) {
			if n, ok := d.intRange(v, path, 1, 128); ok {
				p.Prefix = int(n)
			}
		}},
		{"engine", func(v *yaml.Node, path string) { d.str(v, path, &p.Engine) }},
	})
}

func (d *decoder) realServer(v *yaml.Node, rp string) (RealServer, bool) {
	rs := DefaultRealServer()
	noPort := false
	d.mapping(v, rp, []key{
		{"address", func(v *yaml.Node, p string) {
			if ap, hasPort, ok := d.addrPort(v, p, true); ok {
				rs.Address, noPort = ap, !hasPort
			}
		}},
		{"weight", func(v *yaml.Node, p string) { d.int(v, p, &rs.Weight) }},
		{"forward", func(v *yaml.Node, p string) {
			enum(d, v, p, "forwarding method", forwardNames, forwardVals, &rs.Forward)
		}},
		{"tunnel_type", func(v *yaml.Node, p string) { enum(d, v, p, "tunnel type", tunnelNames, tunnelVals, &rs.TunnelType) }},
		{"tunnel_port", func(v *yaml.Node, p string) {
			if n, ok := d.intRange(v, p, 1, 65535); ok {
				rs.TunnelPort = uint16(n)
			}
		}},
		{"tunnel_checksum", func(v *yaml.Node, p string) {
			enum(d, v, p, "tunnel checksum", csumNames, csumVals, &rs.TunnelChecksum)
		}},
		{"upper_threshold", func(v *yaml.Node, p string) { d.int(v, p, &rs.UpperThreshold) }},
		{"lower_threshold", func(v *yaml.Node, p string) { d.int(v, p, &rs.LowerThreshold) }},
	})
	return rs, noPort
}

func (d *decoder) healthCheck(v *yaml.Node, hp string, hc *HealthCheck) map[string]bool {
	return d.mapping(v, hp, []key{
		{"type", func(v *yaml.Node, p string) {
			var s string
			d.str(v, p, &s)
			hc.Type = CheckType(s)
		}},
		{"port", func(v *yaml.Node, p string) { d.int(v, p, &hc.Port) }},
		{"interval", func(v *yaml.Node, p string) { d.duration(v, p, &hc.Interval) }},
		{"timeout", func(v *yaml.Node, p string) { d.duration(v, p, &hc.Timeout) }},
		{"rise", func(v *yaml.Node, p string) { d.int(v, p, &hc.Rise) }},
		{"fall", func(v *yaml.Node, p string) { d.int(v, p, &hc.Fall) }},
		{"path", func(v *yaml.Node, p string) { d.str(v, p, &hc.Path) }},
		{"expect_status", func(v *yaml.Node, p string) { d.int(v, p, &hc.ExpectStatus) }},
		{"expect_body", func(v *yaml.Node, p string) { d.str(v, p, &hc.ExpectBody) }},
		{"command", func(v *yaml.Node, p string) { d.str(v, p, &hc.Command) }},
		{"on_failure", func(v *yaml.Node, p string) {
			var s string
			d.str(v, p, &s)
			hc.OnFailure = FailureAction(s)
		}},
	})
}
