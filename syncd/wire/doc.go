// Package wire is the codec of the Linux IPVS connection synchronisation
// protocol (net/netfilter/ipvs/ip_vs_sync.c): the UDP payloads a master
// director multicasts so that backups learn its connections and persistence
// templates.
//
// It owns the byte layout of both message versions and nothing else: no
// sockets (package syncd), no connection table. It reproduces these kernel
// behaviours exactly:
//
//   - Version 1 (sync_version=1, the default): an 8-byte header, IPv4 and
//     IPv6 entries with 32-bit flags, fwmark, the configured timeout in
//     seconds and TLV options (SEQ data, PE data, PE name). Entries are
//     padded to 4 bytes between each other but not after the last one; the
//     padding counts in the header size and never in an entry's ver_size.
//   - Version 0 (sync_version=0): a 4-byte header and 24-byte IPv4 entries
//     (48 with sequence data, copied in the sender's little-endian x86 byte
//     order), 16-bit flags, no timeout, fwmark or PE data.
//   - The sender's buffer policy (ip_vs_sync_conn): a message grows until the
//     next entry plus its padding would pass sync_maxlen, the first entry of a
//     message always fits, and one-packet connections (and, in v0, IPv6
//     ones) are never sent. Unlike the kernel, Builder also stops at 255
//     entries, because the kernel's 8-bit entry counter would wrap.
//   - The backup's validation (ip_vs_process_message and
//     ip_vs_proc_sync_conn), check by check and in the kernel's order, with
//     its three outcomes: the whole datagram is dropped, the rest of the
//     datagram is dropped (entries already read are kept), or one entry is
//     skipped. Decoder reports each as a Problem.
//
// Decoding keeps the flags exactly as they were on the wire. The masks a
// kernel backup applies before storing a connection are a separate, explicit
// step (BackupFlags, Message.ApplyBackupFlags), so that tools can show what
// the master really sent.
package wire
