package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Generic netlink family, commands and attributes (include/uapi/linux/ip_vs.h).
const (
	familyName    = "IPVS"
	familyVersion = 1

	cmdNewDaemon = 9
	cmdDelDaemon = 10
	cmdGetDaemon = 11

	cmdAttrDaemon = 3 // nested IPVS_DAEMON_ATTR_*

	daemonAttrState       = 1 // u32: IP_VS_STATE_MASTER / BACKUP
	daemonAttrMcastIfn    = 2 // NUL-terminated string
	daemonAttrSyncID      = 3 // u32
	daemonAttrSyncMaxLen  = 4 // u16
	daemonAttrMcastGroup  = 5 // in_addr, network order
	daemonAttrMcastGroup6 = 6 // in6_addr
	daemonAttrMcastPort   = 7 // u16, host order
	daemonAttrMcastTTL    = 8 // u8

	// ifNameSize is IP_VS_IFNAME_MAXLEN: names of 16 bytes or more are
	// refused by the kernel.
	ifNameSize = 16
)

// Role selects the kernel sync thread: IP_VS_STATE_MASTER or BACKUP.
type Role uint32

// Roles.
const (
	Master Role = 1
	Backup Role = 2
)

func (r Role) String() string {
	switch r {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return fmt.Sprintf("Role(%d)", uint32(r))
}

// Daemon is one kernel sync thread's configuration. Zero fields are left
// out of a start request, so the kernel applies its defaults (as ipvsadm
// sends only the options given): port 8848, TTL 1, group 224.0.0.81,
// maxlen from the MTU.
type Daemon struct {
	Role      Role
	Interface string     // required
	SyncID    uint32     // 0..255; 0 accepts every syncid (backup)
	MaxLen    uint16     // sync_maxlen, 0: default
	Group     netip.Addr // IPv4 or IPv6 multicast group, zero: default
	Port      uint16     // 0: default 8848
	TTL       uint8      // 0: default 1
}

// Validate checks what the kernel would refuse, with the field named.
func (d Daemon) Validate() error {
	var errs []error
	if d.Role != Master && d.Role != Backup {
		errs = append(errs, fmt.Errorf("role %v is neither master nor backup", d.Role))
	}
	if d.Interface == "" || len(d.Interface) >= ifNameSize {
		errs = append(errs, fmt.Errorf("interface %q must be 1..%d bytes", d.Interface, ifNameSize-1))
	}
	if d.SyncID > 255 {
		errs = append(errs, fmt.Errorf("syncid %d out of range 0..255", d.SyncID))
	}
	if d.Group.IsValid() && !d.Group.IsMulticast() {
		errs = append(errs, fmt.Errorf("group %s is not a multicast address", d.Group))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipvs: sync daemon: %w", err)
	}
	return nil
}

// startMessage builds IPVS_CMD_NEW_DAEMON.
func startMessage(d Daemon) (genetlink.Message, error) {
	if err := d.Validate(); err != nil {
		return genetlink.Message{}, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDaemon, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(daemonAttrState, uint32(d.Role))
		nae.String(daemonAttrMcastIfn, d.Interface)
		nae.Uint32(daemonAttrSyncID, d.SyncID)
		if d.MaxLen != 0 {
			nae.Uint16(daemonAttrSyncMaxLen, d.MaxLen)
		}
		if d.Port != 0 {
			nae.Uint16(daemonAttrMcastPort, d.Port)
		}
		if d.TTL != 0 {
			nae.Uint8(daemonAttrMcastTTL, d.TTL)
		}
		if d.Group.Is4() {
			b := d.Group.As4()
			nae.Bytes(daemonAttrMcastGroup, b[:])
		} else if d.Group.Is6() {
			b := d.Group.As16()
			nae.Bytes(daemonAttrMcastGroup6, b[:])
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, fmt.Errorf("ipvs: encode sync daemon: %w", err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmdNewDaemon, Version: familyVersion}, Data: b}, nil
}

// stopMessage builds IPVS_CMD_DEL_DAEMON for one role.
func stopMessage(r Role) (genetlink.Message, error) {
	if r != Master && r != Backup {
		return genetlink.Message{}, fmt.Errorf("ipvs: stop sync daemon: role %v is neither master nor backup", r)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDaemon, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(daemonAttrState, uint32(r))
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, fmt.Errorf("ipvs: encode stop: %w", err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmdDelDaemon, Version: familyVersion}, Data: b}, nil
}

// parseDaemon decodes one IPVS_CMD_GET_DAEMON reply (an IPVS_CMD_NEW_DAEMON
// message carrying the nested daemon attributes). It never panics on
// malformed input.
func parseDaemon(data []byte) (Daemon, error) {
	var d Daemon
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return d, fmt.Errorf("ipvs: daemon reply: %w", err)
	}
	found := false
	for ad.Next() {
		if ad.Type() != cmdAttrDaemon {
			continue
		}
		found = true
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case daemonAttrState:
					d.Role = Role(nad.Uint32())
				case daemonAttrMcastIfn:
					d.Interface = nad.String()
				case daemonAttrSyncID:
					d.SyncID = nad.Uint32()
				case daemonAttrSyncMaxLen:
					d.MaxLen = nad.Uint16()
				case daemonAttrMcastPort:
					d.Port = nad.Uint16()
				case daemonAttrMcastTTL:
					d.TTL = nad.Uint8()
				case daemonAttrMcastGroup:
					if b := nad.Bytes(); len(b) == 4 {
						d.Group = netip.AddrFrom4([4]byte(b))
					} else {
						return fmt.Errorf("IPv4 group of %d bytes", len(b))
					}
				case daemonAttrMcastGroup6:
					if b := nad.Bytes(); len(b) == 16 {
						d.Group = netip.AddrFrom16([16]byte(b))
					} else {
						return fmt.Errorf("IPv6 group of %d bytes", len(b))
					}
				}
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return Daemon{}, fmt.Errorf("ipvs: daemon reply: %w", err)
	}
	if !found {
		return Daemon{}, errors.New("ipvs: daemon reply without IPVS_CMD_ATTR_DAEMON")
	}
	return d, nil
}

// SyncDaemons starts, stops and lists the kernel's sync threads.
type SyncDaemons struct {
	c      *genetlink.Conn
	family genetlink.Family
}

// ErrNoIPVS reports a kernel without the IPVS generic netlink family.
var ErrNoIPVS = errors.New("ipvs: the kernel has no IPVS (generic netlink family \"IPVS\" not found; is ip_vs loaded?)")

// DialSyncDaemons opens a generic netlink socket and finds the IPVS family.
func DialSyncDaemons() (*SyncDaemons, error) {
	c, f, err := dialIPVS()
	if err != nil {
		return nil, err
	}
	return &SyncDaemons{c: c, family: f}, nil
}

// dialIPVS opens a generic netlink socket and resolves the IPVS family on
// it: the one check that tells a kernel with IPVS from one without, shared
// by the sync daemons and the backend.
func dialIPVS() (*genetlink.Conn, genetlink.Family, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, genetlink.Family{}, fmt.Errorf("ipvs: generic netlink: %w", err)
	}
	f, err := c.GetFamily(familyName)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, genetlink.Family{}, ErrNoIPVS
		}
		return nil, genetlink.Family{}, fmt.Errorf("ipvs: find family %s: %w", familyName, err)
	}
	return c, f, nil
}

// Close closes the socket.
func (s *SyncDaemons) Close() error { return s.c.Close() }

// opTimeout bounds one sync-daemon command. Under a loaded machine the
// kernel answers in milliseconds; a command that takes longer is retried on
// a new socket and checked by listing.
const opTimeout = 2 * time.Second

// execute sends one command on a socket of its own, as ipvsadm does, with a
// deadline. Measured under qemu with Linux 6.1: the acknowledgement of a
// stop that follows a start closely was sometimes never read (3 of 15
// start/stop cycles on one reused socket; 2 of 20 with a socket per
// command), although the thread had stopped; 120 ipvsadm commands run the
// same way never hung. Start and Stop therefore settle a missing answer by
// listing the threads.
func (s *SyncDaemons) execute(m genetlink.Message, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("generic netlink: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(opTimeout)); err != nil {
		return nil, err
	}
	return c.Execute(m, s.family.ID, flags)
}

// Start starts a kernel sync thread (ipvsadm --start-daemon).
func (s *SyncDaemons) Start(d Daemon) error {
	m, err := startMessage(d)
	if err != nil {
		return err
	}
	if _, err := s.execute(m, netlink.Request|netlink.Acknowledge); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && s.running(d.Role) {
			return nil // started; the acknowledgement was lost
		}
		return fmt.Errorf("ipvs: start %s sync daemon on %s: %w", d.Role, d.Interface, err)
	}
	return nil
}

// Stop stops a kernel sync thread (ipvsadm --stop-daemon).
func (s *SyncDaemons) Stop(r Role) error {
	m, err := stopMessage(r)
	if err != nil {
		return err
	}
	if _, err := s.execute(m, netlink.Request|netlink.Acknowledge); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && !s.running(r) {
			return nil // stopped; the acknowledgement was lost
		}
		return fmt.Errorf("ipvs: stop %s sync daemon: %w", r, err)
	}
	return nil
}

// running reports whether a listing shows a thread of role r.
func (s *SyncDaemons) running(r Role) bool {
	ds, err := s.List()
	if err != nil {
		return false
	}
	for _, d := range ds {
		if d.Role == r {
			return true
		}
	}
	return false
}

// List returns the running kernel sync threads (ipvsadm -L --daemon).
func (s *SyncDaemons) List() ([]Daemon, error) {
	req := genetlink.Message{Header: genetlink.Header{Command: cmdGetDaemon, Version: familyVersion}}
	msgs, err := s.execute(req, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("ipvs: list sync daemons: %w", err)
	}
	var out []Daemon
	for _, m := range msgs {
		d, err := parseDaemon(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}
