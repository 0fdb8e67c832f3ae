// Package kernel drives the Linux kernel's IPVS over generic netlink (family
// "IPVS", include/uapi/linux/ip_vs.h). It owns:
//
//   - Backend, the kernel as an ipvs.Programmer and ipvs.Observer: it lists
//     services and real servers with their counters, applies the
//     reconciler's operations one by one, and reads connections and
//     persistence templates from /proc/net/ip_vs_conn (ParseConns).
//     Services and real servers go through github.com/moby/ipvs v1.1.0
//     behind the Handle interface; Fake is an in-memory Handle with the
//     kernel's semantics for tests above this package. Canonical puts a
//     desired state in the form State reads back.
//   - The sync daemon commands that moby/ipvs lacks: IPVS_CMD_NEW_DAEMON,
//     IPVS_CMD_DEL_DAEMON and IPVS_CMD_GET_DAEMON, which start, stop and list
//     the kernel's own master and backup sync threads (what `ipvsadm
//     --start-daemon`, `--stop-daemon` and `-L --daemon` do).
//
// Messages of our own (sync daemons, and the service dump that recovers the
// persistence engine names moby does not parse) are built and parsed here
// and tested byte for byte; sending them needs a kernel with IPVS, which the
// real-kernel (qemu) tier exercises.
//
// # What moby/ipvs v1.1.0 cannot do
//
// The conversions refuse, with an error, what would not reach the kernel as
// written or would not read back equal (the reconciler would then "repair"
// it forever): GUE/GRE tunnels and tunnel ports (no IPVS_DEST_ATTR_TUN_*),
// real servers of another family than their service (no
// IPVS_DEST_ATTR_ADDR_FAMILY), weights above 65535 (read back as 16 bits),
// v4-mapped and zoned addresses. Counters come from the 32-bit attributes
// (Conns, InPkts and OutPkts wrap at 2^32) and PersistConns is not read.
// The IPv4 persistence netmask is sent in moby's host byte order; see
// netmaskToMoby.
//
// Backend and the rest of the moby side build on Linux only; elsewhere Open
// fails with ErrNoIPVS and ParseConns still works.
//
// # Privileges
//
// Every change needs CAP_NET_ADMIN in the network namespace.
package kernel
