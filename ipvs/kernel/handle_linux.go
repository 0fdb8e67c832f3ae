//go:build linux

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	mobyipvs "github.com/moby/ipvs"
)

// Handle is the part of *mobyipvs.Handle the backend uses, so that tests
// can put a Fake in its place. Like moby's handle, an implementation need
// not be safe for concurrent use: Backend serialises every call.
type Handle interface {
	GetServices() ([]*mobyipvs.Service, error)
	NewService(*mobyipvs.Service) error
	UpdateService(*mobyipvs.Service) error
	DelService(*mobyipvs.Service) error
	GetDestinations(*mobyipvs.Service) ([]*mobyipvs.Destination, error)
	NewDestination(*mobyipvs.Service, *mobyipvs.Destination) error
	UpdateDestination(*mobyipvs.Service, *mobyipvs.Destination) error
	DelDestination(*mobyipvs.Service, *mobyipvs.Destination) error
	Close()
}

var _ Handle = (*mobyipvs.Handle)(nil)

// PEReader is a Handle that can also say which persistence engine each
// service has. moby/ipvs v1.1.0 sends IPVS_SVC_ATTR_PE_NAME but never
// parses it back, so GetServices reports PEName "" for a "sip" service;
// without a PEReader the backend would see such a service differ from its
// desired state on every pass and update it forever.
type PEReader interface {
	// ServicePEs returns every service that has a persistence engine,
	// with its identifying fields (AddressFamily, and FWMark or Protocol,
	// Address and Port) and PEName set.
	ServicePEs() ([]*mobyipvs.Service, error)
}

// IPVS generic netlink command and attributes read by ServicePEs
// (include/uapi/linux/ip_vs.h).
const (
	cmdGetService = 4
	cmdAttrSvc    = 1 // nested IPVS_SVC_ATTR_*

	svcAttrAF       = 1  // u16
	svcAttrProtocol = 2  // u16
	svcAttrAddr     = 3  // union nf_inet_addr, 16 bytes
	svcAttrPort     = 4  // be16
	svcAttrFWMark   = 5  // u32
	svcAttrPEName   = 11 // NUL-terminated string
)

// netlinkHandle is the real Handle: moby/ipvs for everything it does, and
// a service dump of our own, on the generic netlink socket that found the
// family, for the persistence engine names moby drops.
type netlinkHandle struct {
	*mobyipvs.Handle
	c      *genetlink.Conn
	family genetlink.Family
}

func (h *netlinkHandle) Close() {
	h.Handle.Close()
	h.c.Close()
}

func (h *netlinkHandle) ServicePEs() ([]*mobyipvs.Service, error) {
	req := genetlink.Message{Header: genetlink.Header{Command: cmdGetService, Version: familyVersion}}
	msgs, err := h.c.Execute(req, h.family.ID, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("dump services: %w", err)
	}
	var out []*mobyipvs.Service
	for _, m := range msgs {
		s, err := parseServicePE(m.Data)
		if err != nil {
			return nil, err
		}
		if s.PEName != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// parseServicePE decodes the identifying fields and the persistence engine
// of one IPVS_CMD_NEW_SERVICE dump message (the attributes after the
// generic netlink header). It never panics on malformed input.
func parseServicePE(data []byte) (*mobyipvs.Service, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return nil, fmt.Errorf("service reply: %w", err)
	}
	var s *mobyipvs.Service
	for ad.Next() {
		if ad.Type() != cmdAttrSvc {
			continue
		}
		s = &mobyipvs.Service{}
		var addr []byte
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case svcAttrAF:
					s.AddressFamily = nad.Uint16()
				case svcAttrProtocol:
					s.Protocol = nad.Uint16()
				case svcAttrAddr:
					addr = nad.Bytes()
				case svcAttrPort:
					// Network order, unlike the other integers.
					if b := nad.Bytes(); len(b) == 2 {
						s.Port = binary.BigEndian.Uint16(b)
					} else {
						return fmt.Errorf("port of %d bytes", len(b))
					}
				case svcAttrFWMark:
					s.FWMark = nad.Uint32()
				case svcAttrPEName:
					s.PEName = nad.String()
				}
			}
			return nil
		})
		if ad.Err() != nil {
			break
		}
		if s.FWMark == 0 {
			// The kernel sends the whole 16-byte union; an IPv4
			// address is its first 4 bytes.
			switch {
			case s.AddressFamily == syscall.AF_INET && len(addr) >= net.IPv4len:
				s.Address = net.IP(addr[:net.IPv4len])
			case s.AddressFamily == syscall.AF_INET6 && len(addr) >= net.IPv6len:
				s.Address = net.IP(addr[:net.IPv6len])
			default:
				return nil, fmt.Errorf("service reply: address of %d bytes in family %d", len(addr), s.AddressFamily)
			}
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("service reply: %w", err)
	}
	if s == nil {
		return nil, errors.New("service reply without IPVS_CMD_ATTR_SERVICE")
	}
	return s, nil
}
