package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/aitrail/aitrail/internal/detect"
)

// runRules checks rule files, runs their unit tests, or prints the
// built-in pack: aitrail rules check|test FILE... or aitrail rules builtin.
func runRules(args []string, stdout, stderr io.Writer) error {
	const use = "usage: aitrail rules check FILE... | test FILE... | builtin"
	if len(args) == 0 {
		return usageError{use}
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stderr, use+"\n(aitrail rules check -h and so on list each one's flags)")
		return flag.ErrHelp
	}
	sub := args[0]
	fs := newFlags("rules "+sub, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	switch sub {
	case "check":
		if fs.NArg() == 0 {
			return usageError{"rules check needs at least one rule file"}
		}
		return rulesCheck(fs.Args(), stdout, stderr)
	case "test":
		if fs.NArg() == 0 {
			return usageError{"rules test needs at least one test file"}
		}
		return rulesTest(fs.Args(), stdout, stderr)
	case "builtin":
		if fs.NArg() > 0 {
			return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
		}
		_, err := stdout.Write(detect.BuiltinYAML())
		return err
	}
	return usageError{fmt.Sprintf("unknown rules command %q; %s", sub, use)}
}

// readRuleFiles reads rule files, naming each as given.
func readRuleFiles(names []string) ([]detect.File, error) {
	var files []detect.File
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("couldn't read rule file: %w", err)
		}
		files = append(files, detect.File{Name: name, Data: data})
	}
	return files, nil
}

// printProblems prints each problem of err on its own line and returns the
// error that makes the command exit 1, or err itself if it is not a list
// of problems.
func printProblems(err error, w io.Writer) error {
	var ps detect.Problems
	if !errors.As(err, &ps) {
		return err
	}
	for _, p := range ps {
		fmt.Fprintln(w, p)
	}
	return exitError{code: 1, msg: fmt.Sprintf("%d problem(s) found", len(ps))}
}

func rulesCheck(names []string, stdout, stderr io.Writer) error {
	files, err := readRuleFiles(names)
	if err != nil {
		return err
	}
	rules, err := detect.LoadFiles(true, files...)
	if err != nil {
		return printProblems(err, stderr)
	}
	builtin := map[string]bool{}
	for _, r := range detect.Builtin() {
		builtin[r.ID] = true
	}
	var own, overrides int
	for _, r := range rules {
		if r.File != detect.BuiltinName {
			own++
			if builtin[r.ID] {
				overrides++
			}
		}
	}
	fmt.Fprintf(stdout, "OK: %d rule(s) in %d file(s), %d of them replacing built-in rules; %d rules in force with the built-in pack.\n",
		own, len(files), overrides, len(rules))
	return nil
}

func rulesTest(names []string, stdout, stderr io.Writer) error {
	failed := 0
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("couldn't read test file: %w", err)
		}
		tf, err := detect.ParseTestFile(name, data)
		if err != nil {
			return printProblems(err, stderr)
		}
		var ruleNames []string
		for _, rf := range tf.RuleFiles {
			if !filepath.IsAbs(rf) {
				rf = filepath.Join(filepath.Dir(name), rf)
			}
			ruleNames = append(ruleNames, rf)
		}
		files, err := readRuleFiles(ruleNames)
		if err != nil {
			return err
		}
		rules, err := detect.LoadFiles(tf.UsesBuiltin(), files...)
		if err != nil {
			return printProblems(err, stderr)
		}
		for _, tc := range tf.Tests {
			diff, err := tc.Run(rules)
			if err != nil {
				return fmt.Errorf("%s: test %q: %w", name, tc.Name, err)
			}
			if len(diff) == 0 {
				fmt.Fprintf(stdout, "PASS %s: %s\n", name, tc.Name)
				continue
			}
			failed++
			fmt.Fprintf(stdout, "FAIL %s: %s\n", name, tc.Name)
			for _, d := range diff {
				fmt.Fprintln(stdout, "    "+d)
			}
		}
	}
	if failed > 0 {
		return exitError{code: 1, msg: fmt.Sprintf("%d test(s) failed", failed)}
	}
	return nil
}
