package kernel

import (
	"slices"

	"github.com/lbha/lbha/ipvs"
)

// Canonical returns a copy of desired in the form Backend.State reports
// the same kernel state, so that a Reconciler over a Backend sees no
// difference where the kernel has none:
//
//   - an IPv6 service's Netmask 0 becomes 128: Apply sends 128 for it (the
//     kernel refuses an IPv6 service outside 1..128) and State reads 128;
//   - IPv6 is cleared on address services: it names the family of fwmark
//     services only, State never sets it on others, and Apply refuses it.
//
// Everything else is already canonical: an IPv4 Netmask 0 is the mask
// 0.0.0.0 (one template for every client), not a default, so callers
// wanting per-client persistence set 0xffffffff, as ipvsadm does.
func Canonical(desired []ipvs.ServiceState) []ipvs.ServiceState {
	out := slices.Clone(desired)
	for i := range out {
		k := &out[i].Key
		if k.Fwmark == 0 {
			k.IPv6 = false
		}
		if (k.Fwmark != 0 && k.IPv6 || k.Fwmark == 0 && k.Addr.Is6()) && out[i].Netmask == 0 {
			out[i].Netmask = 128
		}
	}
	return out
}
