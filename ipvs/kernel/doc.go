// Package kernel drives the Linux kernel's IPVS over generic netlink (family
// "IPVS", include/uapi/linux/ip_vs.h). This first part owns the sync daemon
// commands that moby/ipvs lacks: IPVS_CMD_NEW_DAEMON, IPVS_CMD_DEL_DAEMON
// and IPVS_CMD_GET_DAEMON, which start, stop and list the kernel's own
// master and backup sync threads (what `ipvsadm --start-daemon`,
// `--stop-daemon` and `-L --daemon` do).
//
// Messages are built and parsed here and tested byte for byte; sending them
// needs a kernel with IPVS, which the real-kernel (qemu) tier exercises.
//
// # Privileges
//
// Every command needs CAP_NET_ADMIN in the network namespace.
package kernel
