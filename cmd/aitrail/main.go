// Command aitrail is the aitrail audit log: one binary that serves the log
// and the tools that read, verify and load it.
//
// Usage:
//
//	aitrail serve    [--config FILE] [--addr ADDR] [--data DIR] ...   run the server
//	aitrail verify   --data DIR | --url URL --key VKEY [--trusted FILE]
//	aitrail query    --url URL --token TOKEN [filters]                 search events
//	aitrail tail     --url URL --token TOKEN [filters]                 follow new events
//	aitrail models   --url URL --token TOKEN [--history] [filters]     model deployments
//	aitrail reindex  --data DIR                                        rebuild the query index
//	aitrail status   --data DIR | --url URL                            sealing state, readiness
//	aitrail keys     rotate|list --data DIR                            master key rotation
//	aitrail erase    --url URL --token TOKEN --tenant T --subject S    crypto-shred a subject
//	aitrail alerts   [ack --id ID] --url URL --token TOKEN [filters]   list or acknowledge alerts
//	aitrail bench    --url URL --token TOKEN [--clients N ...] [--otlp] load generator
//	aitrail bench-disk --dir DIR                                       raw fsync reference
//	aitrail bench-http [--addr ADDR]                                   bare HTTP reference
//	aitrail rules    check FILE... | test FILE... | builtin            detection rules
//	aitrail version
//
// Every subcommand documents its flags with -h. Settings for serve are
// described in docs/configuration.md; the server logs JSON lines (log/slog)
// on stderr and never logs event content or secrets.
//
// Exit status: 0 success, 1 failure (for verify: the log is damaged; for
// rules: a problem in a rule file or a failed rule test), 2 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type command struct {
	name  string
	short string
	run   func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the server", runServe},
		{"verify", "verify the log offline (--data) or remotely (--url)", runVerify},
		{"query", "search events", runQuery},
		{"tail", "follow new events", runTail},
		{"models", "list model deployments (the deployment registry)", runModels},
		{"reindex", "rebuild the query index from the log", runReindex},
		{"alerts", "list alerts, or acknowledge one (alerts ack --id ID)", runAlerts},
		{"erase", "erase a subject's personal data (destroys its keys) through a server", runErase},
		{"keys", "rotate the master key, or list key versions (keys rotate|list)", runKeys},
		{"status", "show how the log's files are sealed (--data) or a server's readiness (--url)", runStatus},
		{"bench", "load-test a running server", runBench},
		{"bench-disk", "measure the disk's group-committed fsync rate (benchmark reference)", runBenchDisk},
		{"bench-http", "answer bench's requests with net/http alone (benchmark reference)", runBenchHTTP},
		{"rules", "check detection rule files, run their unit tests, or print the built-in pack", runRules},
		{"version", "print the version", runVersion},
	}
}

// tokenFlag defines --token, taken from $AITRAIL_TOKEN unless given. Usage
// text never prints its value, as it would a default: a token in the
// environment must not reach a terminal or a CI log with a usage error.
func tokenFlag(fs *flag.FlagSet, usage string) *string {
	t := &secretFlag{v: os.Getenv("AITRAIL_TOKEN")}
	fs.Var(t, "token", usage)
	return &t.v
}

// secretFlag is a string flag whose String is empty, so that flag's usage
// shows no default.
type secretFlag struct{ v string }

func (s *secretFlag) String() string     { return "" }
func (s *secretFlag) Set(v string) error { s.v = v; return nil }

// usageError makes the process exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError carries a specific exit status with a message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(args[1:], stdout, stderr)
			var ue usageError
			var ee exitError
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.As(err, &ue):
				fmt.Fprintf(stderr, "aitrail %s: %s\n", c.name, ue.msg)
				return 2
			case errors.As(err, &ee):
				if ee.msg != "" {
					fmt.Fprintln(stderr, ee.msg)
				}
				return ee.code
			default:
				// The client package's errors start with "aitrail: " too.
				fmt.Fprintf(stderr, "aitrail %s: %s\n", c.name, strings.TrimPrefix(err.Error(), "aitrail: "))
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "aitrail: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "aitrail — a tamper-evident audit log for AI systems\n\nUsage: aitrail <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w, "\nRun 'aitrail <command> -h' for the flags of a command.")
}

// runVersion prints the version; it takes no flags or arguments.
func runVersion(args []string, stdout, stderr io.Writer) error {
	if err := parse(newFlags("version", stderr), args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, version)
	return nil
}

// isHelp reports whether arg asks for a command's help.
func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h" }

// newFlags returns a flag set whose errors become usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("aitrail "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags, turning problems into usage errors and refusing
// positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
