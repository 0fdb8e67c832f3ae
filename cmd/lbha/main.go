// Command lbha is the highly available L4 load balancer: the director agent,
// the witness, and the operator CLI, in one binary.
//
// main only wires signals to a context and runs the command tree; each
// subcommand lives in its own file and registers itself with addCommand.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// commandFactories holds the constructors of the top-level subcommands, in
// registration order. Files add theirs from init with addCommand.
var commandFactories []func() *cobra.Command

func addCommand(f func() *cobra.Command) { commandFactories = append(commandFactories, f) }

// exitError carries a process exit status through cobra without printing a
// usage message. A nil err means the command already reported its problem.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// silentExit returns an error that sets the exit status and prints nothing
// more: the command has written its own diagnostics.
func silentExit(code int) error { return &exitError{code: code} }

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "lbha",
		Short:         "Highly available Linux L4 load balancer",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	for _, f := range commandFactories {
		root.AddCommand(f())
	}
	return root
}

// run executes the command line and returns the process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "lbha:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "lbha:", err)
	return 1
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
