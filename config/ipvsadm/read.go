package ipvsadm

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbha/lbha/config"
	"github.com/lbha/lbha/dest"
)

// ParseError is a line ParseSave cannot apply.
type ParseError struct {
	Line  int    // 1-based
	Token string // the offending token, or "" for the line as a whole
	Msg   string
}

func (e *ParseError) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("ipvsadm: line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("ipvsadm: line %d: %q: %s", e.Line, e.Token, e.Msg)
}

// ReadSave reads all of r and parses it with ParseSave.
func ReadSave(r io.Reader) ([]config.Service, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("ipvsadm: read: %w", err)
	}
	return ParseSave(data)
}

// ParseSave applies ipvsadm rules (ipvsadm -Sn output or -R input) to an
// empty table and returns its services in the order they were added, each
// with its real servers in the order they were added. It stops at the
// first error, a *ParseError.
func ParseSave(data []byte) ([]config.Service, error) {
	t := &table{}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		text := strings.TrimSpace(string(raw))
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var toks []string
		for _, tok := range strings.Fields(text) {
			if tok != "ipvsadm" {
				toks = append(toks, tok)
			}
		}
		if len(toks) == 0 {
			continue
		}
		r, err := parseLine(i+1, toks)
		if err != nil {
			return nil, err
		}
		if err := t.apply(r); err != nil {
			return nil, err
		}
	}
	return t.svcs, nil
}

type argKind uint8

const (
	noArg argKind = iota
	reqArg
	optArg // popt's optional argument: the next token unless it starts with '-'
)

// class groups options ipvsadm counts as one (it refuses a class twice).
type class uint8

const (
	clsCommand class = iota
	clsService
	clsIPv6
	clsSched
	clsPersistent
	clsNetmask
	clsPE
	clsFlags
	clsOPS
	clsServer
	clsForward
	clsWeight
	clsUThreshold
	clsLThreshold
	clsTunType
	clsTunPort
	clsTunNoCsum
	clsTunCsum
	clsTunRemCsum
	numClasses
)

var classNames = [numClasses]string{
	"command", "service-address", "ipv6", "scheduler", "persistent", "netmask", "pe",
	"sched-flags", "ops", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
}

type option struct {
	short byte
	long  string
	arg   argKind
	cls   class
	// code tells options of one class apart: the command letter, the
	// service kind, the forwarding method.
	code byte
}

var options = []option{
	{'A', "add-service", noArg, clsCommand, 'A'},
	{'E', "edit-service", noArg, clsCommand, 'E'},
	{'D', "delete-service", noArg, clsCommand, 'D'},
	{'C', "clear", noArg, clsCommand, 'C'},
	{'a', "add-server", noArg, clsCommand, 'a'},
	{'e', "edit-server", noArg, clsCommand, 'e'},
	{'d', "delete-server", noArg, clsCommand, 'd'},
	{'t', "tcp-service", reqArg, clsService, 't'},
	{'u', "udp-service", reqArg, clsService, 'u'},
	{0, "sctp-service", reqArg, clsService, 'S'},
	{'f', "fwmark-service", reqArg, clsService, 'f'},
	{'6', "ipv6", noArg, clsIPv6, 0},
	{'s', "scheduler", reqArg, clsSched, 0},
	{'p', "persistent", optArg, clsPersistent, 0},
	{'M', "netmask", reqArg, clsNetmask, 0},
	{0, "pe", reqArg, clsPE, 0},
	{'b', "sched-flags", reqArg, clsFlags, 0},
	{'o', "ops", noArg, clsOPS, 0},
	{'r', "real-server", reqArg, clsServer, 0},
	{'g', "gatewaying", noArg, clsForward, 'g'},
	{'i', "ipip", noArg, clsForward, 'i'},
	{'m', "masquerading", noArg, clsForward, 'm'},
	{'w', "weight", reqArg, clsWeight, 0},
	{'x', "u-threshold", reqArg, clsUThreshold, 0},
	{'y', "l-threshold", reqArg, clsLThreshold, 0},
	{0, "tun-type", reqArg, clsTunType, 0},
	{0, "tun-port", reqArg, clsTunPort, 0},
	{0, "tun-nocsum", noArg, clsTunNoCsum, 0},
	{0, "tun-csum", noArg, clsTunCsum, 0},
	{0, "tun-remcsum", noArg, clsTunRemCsum, 0},
}

// allowed lists, per command, the option classes it takes; the first one
// or two are compulsory (ipvsadm's commands_v_options table).
var allowed = map[byte]struct {
	name     string
	required []class
	optional []class
}{
	'A': {"add-service", []class{clsService}, []class{clsIPv6, clsSched, clsPersistent, clsNetmask, clsPE, clsFlags, clsOPS}},
	'E': {"edit-service", []class{clsService}, []class{clsIPv6, clsSched, clsPersistent, clsNetmask, clsPE, clsFlags, clsOPS}},
	'D': {"delete-service", []class{clsService}, []class{clsIPv6}},
	'C': {"clear", nil, nil},
	'a': {"add-server", []class{clsService, clsServer}, []class{clsIPv6, clsForward, clsWeight, clsUThreshold, clsLThreshold, clsTunType, clsTunPort, clsTunNoCsum, clsTunCsum, clsTunRemCsum}},
	'e': {"edit-server", []class{clsService, clsServer}, []class{clsIPv6, clsForward, clsWeight, clsUThreshold, clsLThreshold, clsTunType, clsTunPort, clsTunNoCsum, clsTunCsum, clsTunRemCsum}},
	'd': {"delete-server", []class{clsService, clsServer}, []class{clsIPv6}},
}

// setting is one option given on a line.
type setting struct {
	tok  string // the option as written
	code byte
	val  string
	has  bool // an optional argument was given
}

// rule is one parsed line, before it is applied to the table.
type rule struct {
	line int
	cmd  byte
	set  [numClasses]*setting
	svc  config.Service // identity only
	rs   config.RealServer
}

func errf(line int, tok, format string, args ...any) *ParseError {
	return &ParseError{Line: line, Token: tok, Msg: fmt.Sprintf(format, args...)}
}

func lookupLong(name string) *option {
	for i := range options {
		if options[i].long == name {
			return &options[i]
		}
	}
	return nil
}

func lookupShort(c byte) *option {
	for i := range options {
		if options[i].short == c {
			return &options[i]
		}
	}
	return nil
}

// parseLine splits a line into options as popt does for ipvsadm: long
// options with "--name value" or "--name=value", short options that may be
// bundled ("-at") with a value attached or in the next token.
func parseLine(line int, toks []string) (*rule, error) {
	r := &rule{line: line}
	record := func(o *option, tok, val string, has bool) error {
		if o.cls == clsIPv6 && r.set[clsService] == nil {
			return errf(line, tok, "-6 used before -f")
		}
		if r.set[o.cls] != nil {
			if o.cls == clsCommand {
				return errf(line, tok, "multiple commands specified")
			}
			return errf(line, tok, "multiple '%s' options specified", classNames[o.cls])
		}
		r.set[o.cls] = &setting{tok: tok, code: o.code, val: val, has: has}
		return nil
	}
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch {
		case strings.HasPrefix(tok, "--") && len(tok) > 2:
			name, val, hasVal := strings.Cut(tok[2:], "=")
			o := lookupLong(name)
			if o == nil {
				return nil, errf(line, tok, "unknown or unsupported option")
			}
			switch {
			case o.arg == noArg && hasVal:
				return nil, errf(line, tok, "option takes no value")
			case o.arg == reqArg && !hasVal:
				if i+1 >= len(toks) {
					return nil, errf(line, tok, "missing value")
				}
				i++
				val, hasVal = toks[i], true
			case o.arg == optArg && !hasVal && i+1 < len(toks) && !strings.HasPrefix(toks[i+1], "-"):
				i++
				val, hasVal = toks[i], true
			}
			if err := record(o, "--"+name, val, hasVal); err != nil {
				return nil, err
			}
		case strings.HasPrefix(tok, "-") && len(tok) > 1 && tok != "--":
			for j := 1; j < len(tok); j++ {
				o := lookupShort(tok[j])
				if o == nil {
					return nil, errf(line, tok, "unknown or unsupported option -%c", tok[j])
				}
				name := "-" + string(tok[j])
				if o.arg == noArg {
					if err := record(o, name, "", false); err != nil {
						return nil, err
					}
					continue
				}
				val, hasVal := tok[j+1:], j+1 < len(tok)
				if !hasVal {
					switch {
					case o.arg == reqArg && i+1 >= len(toks):
						return nil, errf(line, name, "missing value")
					case o.arg == reqArg, i+1 < len(toks) && !strings.HasPrefix(toks[i+1], "-"):
						i++
						val, hasVal = toks[i], true
					}
				}
				if err := record(o, name, val, hasVal); err != nil {
					return nil, err
				}
				break // the rest of the token, if any, was the value
			}
		default:
			return nil, errf(line, tok, "unexpected argument")
		}
	}
	cmd := r.set[clsCommand]
	if cmd == nil {
		return nil, errf(line, toks[0], "no command (want -A, -E, -D, -a, -e, -d or -C)")
	}
	r.cmd = cmd.code
	spec := allowed[r.cmd]
	for c := clsService; c < numClasses; c++ {
		s := r.set[c]
		switch {
		case slices.Contains(spec.required, c) && s == nil:
			return nil, errf(line, cmd.tok, "You need to supply the '%s' option for the '%s' command", classNames[c], spec.name)
		case s != nil && !slices.Contains(spec.required, c) && !slices.Contains(spec.optional, c):
			return nil, errf(line, s.tok, "Illegal '%s' option with the '%s' command", classNames[c], spec.name)
		}
	}
	if r.set[clsService] != nil {
		if err := r.parseService(); err != nil {
			return nil, err
		}
	}
	switch r.cmd {
	case 'A', 'E':
		if err := r.parseServiceOptions(); err != nil {
			return nil, err
		}
	case 'a', 'e', 'd':
		if err := r.parseServer(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// number parses a decimal in lo..hi as ipvsadm's string_to_number does.
func number(s string, lo, hi int64) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	return v, true
}

// hostPort parses ipvsadm's host[:port] with numeric hosts and ports:
// "a.b.c.d", "a.b.c.d:port", a bare IPv6 address, or "[v6]:port".
func hostPort(line int, s string) (ap netip.AddrPort, hasPort bool, err error) {
	bad := func(msg string) error { return errf(line, s, "%s", msg) }
	host, port := s, ""
	hasPort = false
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return ap, false, bad("want [ipv6]:port")
		}
		host, port, hasPort = s[1:end], s[end+2:], true
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return ap, false, bad("not an IPv6 address in brackets")
		}
	} else if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		host = s
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port, hasPort = s[:i], s[i+1:], true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return ap, false, bad("not a numeric address (host names are not resolved; use ipvsadm -Sn)")
	}
	if a.Zone() != "" {
		return ap, false, bad("scoped addresses are not supported")
	}
	var p int64
	if hasPort {
		var ok bool
		if p, ok = number(port, 0, 65535); !ok {
			return ap, false, bad("port must be a number 0..65535 (service names are not resolved; use ipvsadm -Sn)")
		}
	}
	return netip.AddrPortFrom(a, uint16(p)), hasPort, nil
}

func (r *rule) parseService() error {
	s := r.set[clsService]
	switch s.code {
	case 'f':
		m, err := strconv.ParseUint(s.val, 10, 32)
		if err != nil || m == 0 {
			return errf(r.line, s.val, "invalid fwmark value (want 1..4294967295)")
		}
		r.svc.FWMark = uint32(m)
		r.svc.Family = config.Inet
		if r.set[clsIPv6] != nil {
			r.svc.Family = config.Inet6
		}
		return nil
	case 't':
		r.svc.Protocol = config.TCP
	case 'u':
		r.svc.Protocol = config.UDP
	case 'S':
		r.svc.Protocol = config.SCTP
	}
	if six := r.set[clsIPv6]; six != nil {
		return errf(r.line, six.tok, "-6 used before -f")
	}
	ap, _, err := hostPort(r.line, s.val)
	if err != nil {
		return err
	}
	r.svc.Address = ap
	return nil
}

func (r *rule) parseServiceOptions() error {
	s := &r.svc
	s.Scheduler = config.DefaultScheduler
	if v := r.set[clsSched]; v != nil {
		if v.val == "" || len(v.val) > 15 {
			return errf(r.line, v.val, "invalid scheduler name")
		}
		s.Scheduler = v.val
	}
	fam := s.AddrFamily()
	if v := r.set[clsPersistent]; v != nil {
		p := config.DefaultPersistence()
		if v.has {
			t, ok := number(v.val, 1, int64(config.MaxPersistenceTimeout/time.Second))
			if !ok {
				return errf(r.line, v.val, "invalid timeout value (want 1..2678400 seconds)")
			}
			p.Timeout = time.Duration(t) * time.Second
		}
		if fam == config.Inet {
			p.Netmask = config.HostMask4
		} else {
			p.Prefix = 128
		}
		s.Persistence = &p
	}
	if v := r.set[clsNetmask]; v != nil {
		if s.Persistence == nil {
			return errf(r.line, v.tok, "a netmask needs -p: it only applies to persistent services")
		}
		if fam == config.Inet {
			a, err := netip.ParseAddr(v.val)
			if err != nil || !a.Is4() {
				return errf(r.line, v.val, "illegal virtual server persistent mask specified")
			}
			s.Persistence.Netmask = a
		} else {
			n, ok := number(v.val, 1, 128)
			if !ok {
				return errf(r.line, v.val, "illegal ipv6 netmask specified")
			}
			s.Persistence.Prefix = int(n)
		}
	}
	if v := r.set[clsPE]; v != nil {
		if s.Persistence == nil {
			return errf(r.line, v.tok, "a persistence engine needs -p")
		}
		if !slices.Contains(config.PersistenceEngines, v.val) {
			return errf(r.line, v.val, "unknown persistence engine (want sip)")
		}
		s.Persistence.Engine = v.val
	}
	if v := r.set[clsOPS]; v != nil {
		if s.FWMark == 0 && s.Protocol != config.UDP {
			return errf(r.line, v.tok, "One-Packet Scheduling is only for UDP virtual services")
		}
		s.OnePacket = true
	}
	if v := r.set[clsFlags]; v != nil {
		n := 0
		for _, name := range strings.Split(v.val, ",") {
			if name == "" {
				continue // strtok skips empty fields
			}
			bit, err := config.ParseSchedFlag(s.Scheduler, name)
			if err != nil {
				return errf(r.line, name, "%v", err)
			}
			s.SchedFlags |= bit
			n++
		}
		if n == 0 {
			return errf(r.line, v.val, "no scheduler flag given")
		}
	}
	if s.FWMark == 0 && s.Address.Port() == 0 && s.Persistence == nil {
		return errf(r.line, r.set[clsService].val, "Zero port specified for non-persistent service")
	}
	return nil
}

func (r *rule) parseServer() error {
	rs := config.DefaultRealServer()
	v := r.set[clsServer]
	ap, hasPort, err := hostPort(r.line, v.val)
	if err != nil {
		return err
	}
	svcPort := r.svc.Address.Port()
	if !hasPort {
		ap = netip.AddrPortFrom(ap.Addr(), svcPort)
	}
	rs.Address = ap
	if r.cmd == 'd' {
		r.rs = rs
		return nil
	}
	if f := r.set[clsForward]; f != nil {
		switch f.code {
		case 'g':
			rs.Forward = dest.Route
		case 'i':
			rs.Forward = dest.Tunnel
		case 'm':
			rs.Forward = dest.Masq
		}
	}
	// ipvsadm: the destination port must equal the service port with
	// direct routing or tunnelling, unless the service is a fwmark.
	if r.svc.FWMark == 0 && rs.Forward != dest.Masq {
		rs.Address = netip.AddrPortFrom(ap.Addr(), svcPort)
	}
	if config.FamilyOf(ap.Addr()) != r.svc.AddrFamily() && rs.Forward != dest.Tunnel {
		return errf(r.line, v.val, "Different address family is allowed only for tunneling servers")
	}
	if w := r.set[clsWeight]; w != nil {
		n, ok := number(w.val, 0, dest.MaxWeight)
		if !ok {
			return errf(r.line, w.val, "illegal weight specified (want 0..65535)")
		}
		rs.Weight = int(n)
	}
	if x := r.set[clsUThreshold]; x != nil {
		n, ok := number(x.val, 0, config.MaxThreshold)
		if !ok {
			return errf(r.line, x.val, "illegal u_threshold specified")
		}
		rs.UpperThreshold = int(n)
	}
	if y := r.set[clsLThreshold]; y != nil {
		n, ok := number(y.val, 0, config.MaxThreshold)
		if !ok {
			return errf(r.line, y.val, "illegal l_threshold specified")
		}
		rs.LowerThreshold = int(n)
	}
	if rs.LowerThreshold > rs.UpperThreshold {
		// ipvsadm passes this on; the kernel answers ERANGE.
		return errf(r.line, r.set[clsLThreshold].val, "lower threshold is higher than upper threshold")
	}
	if err := r.parseTunnel(&rs); err != nil {
		return err
	}
	r.rs = rs
	return nil
}

func (r *rule) parseTunnel(rs *config.RealServer) error {
	tunOpts := []class{clsTunType, clsTunPort, clsTunNoCsum, clsTunCsum, clsTunRemCsum}
	if rs.Forward != dest.Tunnel {
		for _, c := range tunOpts {
			if s := r.set[c]; s != nil {
				return errf(r.line, s.tok, "Tunnel options conflict with forward method")
			}
		}
		return nil
	}
	if s := r.set[clsTunType]; s != nil {
		switch s.val {
		case "ipip":
			rs.TunnelType = config.TunnelIPIP
		case "gue":
			rs.TunnelType = config.TunnelGUE
		case "gre":
			rs.TunnelType = config.TunnelGRE
		default:
			return errf(r.line, s.val, "illegal tunnel type specified (want ipip, gue or gre)")
		}
	}
	// ipvsadm's tunnel_types_v_options table.
	name := rs.TunnelType.String()
	port := r.set[clsTunPort]
	switch {
	case rs.TunnelType == config.TunnelGUE && port == nil:
		return errf(r.line, r.set[clsTunType].tok, "You need to supply the 'tun-port' option for the 'gue' tunnel type")
	case rs.TunnelType != config.TunnelGUE && port != nil:
		return errf(r.line, port.tok, "Illegal 'tun-port' option with the '%s' tunnel type", name)
	case port != nil:
		n, ok := number(port.val, 1, 65535)
		if !ok {
			return errf(r.line, port.val, "illegal tunnel port specified")
		}
		rs.TunnelPort = uint16(n)
	}
	var csum *setting
	for i, c := range []class{clsTunNoCsum, clsTunCsum, clsTunRemCsum} {
		s := r.set[c]
		if s == nil {
			continue
		}
		mode := config.TunnelChecksum(i)
		if rs.TunnelType == config.TunnelIPIP || (rs.TunnelType == config.TunnelGRE && mode == config.TunnelRemoteChecksum) {
			return errf(r.line, s.tok, "Illegal '%s' option with the '%s' tunnel type", classNames[c], name)
		}
		if csum != nil {
			return errf(r.line, s.tok, "The option '%s' conflicts with the '%s' option in the '%s' tunnel type", s.tok, csum.tok, name)
		}
		csum = s
		rs.TunnelChecksum = mode
	}
	return nil
}

// table is the service table being built.
type table struct {
	svcs  []config.Service
	index map[string]int // Service.Key -> position in svcs
}

func (t *table) find(s *config.Service) int {
	if i, ok := t.index[s.Key()]; ok {
		return i
	}
	return -1
}

// reindex rebuilds the index after services were removed.
func (t *table) reindex() {
	t.index = make(map[string]int, len(t.svcs))
	for i := range t.svcs {
		t.index[t.svcs[i].Key()] = i
	}
}

func (t *table) apply(r *rule) error {
	if r.cmd == 'C' {
		t.svcs = nil
		t.reindex()
		return nil
	}
	svcTok := r.set[clsService].val
	i := t.find(&r.svc)
	switch r.cmd {
	case 'A':
		if i >= 0 {
			return errf(r.line, svcTok, "Service already exists")
		}
		if t.index == nil {
			t.index = map[string]int{}
		}
		t.index[r.svc.Key()] = len(t.svcs)
		t.svcs = append(t.svcs, r.svc)
		return nil
	case 'E', 'D':
		if i < 0 {
			return errf(r.line, svcTok, "No such service")
		}
		if r.cmd == 'D' {
			t.svcs = slices.Delete(t.svcs, i, i+1)
			t.reindex()
			return nil
		}
		// ipvsadm -E sends every service setting anew, defaults included.
		rs := t.svcs[i].RealServers
		t.svcs[i] = r.svc
		t.svcs[i].RealServers = rs
		return nil
	}
	if i < 0 {
		return errf(r.line, svcTok, "Service not defined")
	}
	s := &t.svcs[i]
	j := slices.IndexFunc(s.RealServers, func(rs config.RealServer) bool { return rs.Address == r.rs.Address })
	switch r.cmd {
	case 'a':
		if j >= 0 {
			return errf(r.line, r.set[clsServer].val, "Destination already exists")
		}
		s.RealServers = append(s.RealServers, r.rs)
	case 'e', 'd':
		if j < 0 {
			return errf(r.line, r.set[clsServer].val, "No such destination")
		}
		if r.cmd == 'd' {
			s.RealServers = slices.Delete(s.RealServers, j, j+1)
		} else {
			s.RealServers[j] = r.rs
		}
	}
	return nil
}
