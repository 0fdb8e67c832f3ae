package agent

import (
	"errors"

	"github.com/lbha/lbha/internal/api"
)

var errNoDataplane = errors.New("this node runs no dataplane")

func (a *Agent) Services() (api.Services, error) { return api.Services{}, errNoDataplane }

func (a *Agent) Conns() (api.Conns, error) { return api.Conns{}, errNoDataplane }
