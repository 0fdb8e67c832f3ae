// Package config owns lbha's configuration file: the typed model of a node
// (director or witness), its cluster peers, VIPs, the connection sync daemon
// and the virtual services with their real servers; the defaults; the YAML
// reader and writer; and validation.
//
// # Kernel behaviour reproduced
//
// The service model and its defaults follow ipvsadm 1.31 and the kernel's
// IPVS control path (net/netfilter/ipvs/ip_vs_ctl.c):
//   - the default scheduler is wlc; scheduler flags are the three
//     IP_VS_SVC_F_SCHED bits, named sh-fallback/sh-port for sh,
//     mh-fallback/mh-port for mh and flag-1..flag-3 otherwise;
//   - a persistence block with no timeout means 360 s (ipvsadm's
//     IPVS_SVC_PERSISTENT_TIMEOUT, not the 300 s its man page states); the
//     accepted range is 1 s to 31 days; the granularity defaults to
//     255.255.255.255 for IPv4 and /128 for IPv6;
//   - a port-zero service must be persistent; one-packet scheduling is for
//     UDP and fwmark services; the sip persistence engine only reads UDP;
//   - a real server weight is 0..65535 (default 1), the lower connection
//     threshold may not exceed the upper one, and direct routing is the
//     default forwarding method, whose real-server port is always the
//     service port;
//   - the sync daemon defaults to group 224.0.0.81, port 8848, TTL 1 and
//     the kernel's message length; an IPv6 group must be given explicitly.
//
// lbha is stricter than ipvsadm where a setting would silently misbehave:
// real servers must share the service's address family (the kernel refuses
// to start a sync daemon otherwise), and netmasks must be contiguous.
//
// # Validation
//
// [Parse] walks the YAML node tree itself rather than decoding into structs,
// so every key and value keeps its position and every problem in a file is
// reported at once, as a [*ValidationError] whose [Problem]s read
// "file:line:column: path: reason". [Config.Validate] runs the same semantic
// checks on a configuration built in code; its problems carry only a path.
package config
