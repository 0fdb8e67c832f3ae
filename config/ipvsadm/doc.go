// Package ipvsadm reads and writes the rules format of ipvsadm 1.31: the
// output of "ipvsadm -Sn" (ipvsadm-save -n), which is also the input of
// "ipvsadm -R", converting it to and from the services of package config.
//
// # Reading
//
// ParseSave accepts what ipvsadm -R accepts for building a table: one
// command per line (-A, -E, -D, -a, -e, -d, -C, short or long form), tokens
// split on white space, any token "ipvsadm" skipped and blank lines
// ignored; it also skips lines starting with #. It applies ipvsadm's checks
// and defaults: wlc, -p without a value is 360 s, netmask /32 or /128,
// weight 1, direct routing, a real server without a port takes the service
// port and a direct-routing or tunnel real server of a non-fwmark service
// always does; a port-zero service must be persistent, one-packet
// scheduling is for UDP and fwmark services, sh-* and mh-* flags need their
// scheduler, tunnel options need -i and must suit the tunnel type. The
// kernel's refusals that ipvsadm would only see on the way in (duplicate
// service or real server, lower threshold above the upper one, unknown
// persistence engine) are errors too. Errors name the line and token.
//
// Only numeric addresses and ports are read (the -n form); host and service
// names would need resolvers. A -M or --pe without -p is refused: the
// configuration model keeps both inside the persistence settings, and
// neither has an effect on a service that is not persistent.
//
// # Writing
//
// WriteSave prints services byte for byte as ipvsadm -Sn prints the same
// kernel table, including ipvsadm's ordering: services sorted by fwmark,
// family, protocol, address and port, real servers by address and port,
// with ipvsadm's comparison that subtracts 32-bit words and keeps the
// wrapped difference (so 192.0.2.1 sorts before 10.0.0.1), through a merge
// sort that visits elements as glibc's qsort does. Like ipvsadm, it does not
// save connection thresholds, and it drops everything lbha adds to a
// service (name, health check, sorry server).
package ipvsadm
