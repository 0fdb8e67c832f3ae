// Package sched owns the IPVS schedulers: given a virtual service's ordered
// destination list, it chooses the real server for a new connection exactly
// as the Linux kernel's net/netfilter/ipvs/ip_vs_<name>.c modules do.
//
// Supported: rr, wrr, lc, wlc (the kernel default), sed, nq, sh, dh, mh, fo,
// ovf, lblc, lblcr and twos. Rules reproduced (lbha spec §D):
//
//   - overhead = activeconns×256 + inactconns (dest.Overhead); templates are
//     not counted;
//   - weighted comparisons cross-multiply in 64 bits and are strict, so a tie
//     goes to the destination earlier in the list;
//   - a destination with weight 0 (quiesced) is never chosen and one with
//     OVERLOAD set is skipped (lblc alone keeps using a cached destination
//     whatever its OVERLOAD flag, as the kernel does);
//   - Pick returns nil when nothing is eligible, where the kernel logs
//     "no destination available".
//
// # Keeping the scheduler in step
//
// The kernel calls a scheduler's add_dest, del_dest and upd_dest hooks on
// every change of the list or of a destination's weight; here the caller
// calls Scheduler.Update with the new list instead. Update rebuilds what the
// kernel rebuilds on those hooks (wrr's position and current weight, the
// sh/dh bucket tables, the mh lookup table, rr's position when the last
// chosen destination goes away) and keeps what the kernel keeps (lblc and
// lblcr caches). Weights and connection counters are read live from each
// dest.Dest at Pick time, as the kernel reads its atomics, so only list and
// weight changes need an Update. One Update stands for one kernel hook call.
//
// # Hashing
//
// sh and dh fold an IPv6 address by XOR of its four 32-bit words and use the
// kernel's hash_32 (multiplication by 0x61C88647, top bits). mh hashes with
// hsiphash, which on 64-bit kernels is SipHash-1-3 with a 32-bit result;
// this package implements that flavour (checked against the kernel's own
// hsiphash test vectors) and hashes the 32-bit key in little-endian byte
// order, as an x86-64 or arm64 kernel does. Bit-exactness of the mh lookup
// table against a running kernel is still to be confirmed in the qemu test
// tier; HalfSipHash (32-bit kernels) and big-endian hosts are not
// reproduced. Addresses are folded by their own family: give Packet and
// dest addresses in the service's family (an IPv4-mapped IPv6 address is an
// IPv6 address here, as in an IPv6 service).
//
// # Concurrency
//
// A Scheduler serves concurrent Pick calls, and Update may run concurrently
// with them. Stateless schedulers (lc, wlc, sed, nq, fo, ovf, twos, sh, dh,
// mh) read an immutable snapshot published atomically by Update and take no
// lock; rr and wrr keep their position under a short mutex, as the kernel
// keeps it under the service's sched_lock; lblc and lblcr guard their cache
// with a mutex.
//
// # Time and randomness
//
// lblc and lblcr expire cache entries from Options.Now: the kernel's
// once-a-minute garbage-collection timer is replayed lazily, tick by tick,
// on the next Pick, so no goroutine is started. The kernel's habit of
// counting a replaced lblc entry twice in the table size that triggers
// early garbage collection is reproduced. twos draws from Options.Rand.
//
// # Deviations
//
// twos compares w2×oh1 with w1×oh2 in 64 bits where the kernel uses int
// and overflows beyond 2^31; wlc-style loops skip weight 0 explicitly where
// the kernel relies on 0×x never exceeding a non-negative product (the same
// result unless a counter went negative).
package sched
