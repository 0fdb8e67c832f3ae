// Package ftp owns the FTP support of lbha's userspace proxy: what the
// kernel's ip_vs_ftp helper (net/netfilter/ipvs/ip_vs_ftp.c) does for a
// NAT service on port 21, done on a proxied control connection instead of on
// packets.
//
// It owns three things:
//   - the parsers and rewriters of the four control-channel forms that carry
//     a data address: the server replies 227 (PASV, RFC 959) and 229 (EPSV,
//     RFC 2428) and the client commands PORT (RFC 959) and EPRT (RFC 2428)
//     ([ParsePASV], [ParseEPSV], [ParsePORT], [ParseEPRT] and their Rewrite
//     counterparts), pure functions on one line without its CRLF;
//   - [Relay], which copies a control connection line by line in both
//     directions and lets the proxy substitute its own data address for the
//     one announced by either side, through [Hooks];
//   - [RelayData], which relays one data connection accepted on a listener
//     the proxy opened from a hook.
//
// The proxy owns the listeners, the choice of addresses and the lifetime of
// everything: each function here returns when its context ends.
//
// # Limitations
//
// Like the kernel helper, the relay cannot see addresses inside an encrypted
// control channel (AUTH TLS), and it leaves LPRT/LPSV (RFC 1639), multi-line
// 227/229 replies and a final line without its line feed untouched. Lines
// longer than 4096 bytes, line feed included, are passed through unmodified.
package ftp
