package userspace

import "github.com/lbha/lbha/persist"

// ftp reports whether the service gets the FTP helper: TCP port 21, as the
// kernel's ip_vs_ftp registers by default.
func (s *service) ftp() bool { return s.key.Protocol == persist.ProtoTCP && s.key.Port == 21 }

// relayFTP relays an FTP control connection.
func (s *service) relayFTP(f *tcpFlow) (in, out int64) { return relay(f.client, f.server) }
