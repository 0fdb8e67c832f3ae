// Package vip owns the virtual addresses of the master director: it puts
// them on interfaces, keeps them alive, announces them to the segment and
// takes them away again. It is declarative: Manager.Set(desired) moves the
// host to the desired set of VIPs, adding before removing, and reports the
// set actually reached.
//
// # Kernel behaviour reproduced
//
// Addresses are programmed with rtnetlink (RTM_NEWADDR/RTM_DELADDR, as
// `ip addr add/del`). IPv6 VIPs carry IFA_F_NODAD so they are usable at
// once instead of staying "tentative" during duplicate address detection.
//
// A takeover is announced with gratuitous ARP in request form (RFC 5227
// §2.3 announcement: opcode request, sender and target protocol address
// both the VIP, target hardware address zero, Ethernet broadcast). Linux
// updates an existing neighbour entry on such a request even with the
// default arp_accept=0 and regardless of neigh/locktime, because
// arp_process treats sender == target as a GARP that overrides the lock;
// the reply form is honoured only when its target hardware address equals
// the sender's. IPv6 VIPs are announced with unsolicited neighbour
// advertisements (RFC 4861 §7.2.6) to ff02::1 with the Override flag set
// and the Router flag copied from the interface's forwarding setting, so a
// real server that routes through the VIP keeps it as a router.
//
// # Fencing bound
//
// A process that is frozen (SIGSTOP, a wedged runtime, a VM paused) cannot
// withdraw anything. Every VIP is therefore added with a finite valid_lft
// and preferred_lft of Config.Lifetime and renewed every Config.RenewEvery
// while held. If renewals stop, the kernel deletes the address by itself
// Lifetime after the last renewal, give or take its timer: it rounds the
// wake-up of its address-expiry work up to a whole second when that costs
// less than 250 ms. So a master frozen at time t holds no VIP after about
// t + Lifetime + 0.3 s (measured in a namespace with a 2 s lifetime and
// renewals every 500 ms: gone 1.99 to 2.30 s after SIGSTOP). A successor
// that cannot rule out a frozen predecessor must wait that long before
// taking the VIPs, or accept that both hold them meanwhile.
//
// Renewal never resurrects an address the kernel has already dropped: the
// kernel cannot be asked to "refresh only if present" (RTM_NEWADDR creates
// the address whether or not NLM_F_CREATE is set), so the Manager checks the
// monotonic clock before and after each renewal and, when the previous
// renewal is older than Lifetime minus a safety margin, gives the VIP up
// instead (Counters.Expired) and deletes whatever the renewal may have
// re-created. A thawed master thus never re-adds a VIP on its own; the next
// Set does, once the caller has re-checked that it is still master.
//
// A Lifetime of zero makes addresses permanent and disables this bound.
//
// # Ownership
//
// The Manager removes only addresses it added. An address that is already
// on the interface with an infinite lifetime belongs to the operator: Set
// reports an error for it and never touches it. An address with a finite
// lifetime is taken over, since that is what a crashed predecessor leaves
// behind (with Lifetime zero, a predecessor's addresses look like the
// operator's). Loopback (127.0.0.0/8, ::1) VIPs are refused: the kernel
// rejects them on lo with EINVAL.
//
// # Privileges
//
// CAP_NET_ADMIN for addresses and CAP_NET_RAW for the ARP (AF_PACKET) and
// ICMPv6 (raw) sockets. CAP_SYS_ADMIN as well when Config.NetNS names a
// network namespace other than the caller's, because sockets are opened on a
// thread switched into it with setns(2).
//
// # Debugging
//
// Watch `ip -d addr show` (valid_lft counts down and jumps back at each
// renewal), `ip monitor address`, and `tcpdump -eni IFACE arp or icmp6` on a
// neighbour. Counters are cheap to poll; the logger reports every takeover,
// removal, renewal failure and expiry, and each announcement at debug level.
package vip
