package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ipamPause is how long the stub IPAM holds a call, so its plugin's
// memory can be read from /proc while the call is under way.
const ipamPause = 300 * time.Millisecond

// rssSplit is one plugin's resident memory in KiB, read mid-call: anon is
// what the call itself allocated (heap, stacks), file the pages of its
// binary mapped from the page cache, which every invocation shares.
type rssSplit struct{ anon, file float64 }

// slowIPAMPath is a CNI_PATH whose host-local waits ipamPause, then runs
// the real one: the plugin is then inside its IPAM call, with its own
// setup done, when /proc is read.
func (b *bench) slowIPAMPath() (string, error) {
	dir := filepath.Join(b.dir, "slow-ipam")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	script := fmt.Sprintf("#!/bin/sh\nsleep %.3f\nexec %s \"$@\"\n", ipamPause.Seconds(), b.upstream("host-local"))
	if err := os.WriteFile(filepath.Join(dir, "host-local"), []byte(script), 0o755); err != nil {
		return "", err
	}
	return filepath.Dir(b.tapbridge) + ":" + dir, nil
}

// sampleRSS runs one ADD and DEL of v with the slow IPAM and reads the
// plugin's RSS halfway through each call's IPAM pause (tapbridge with
// ipamExec, so that its IPAM is the slow binary). (tapbridge calls
// IPAM DEL after removing the links, bridge before: its mid-DEL reading
// has done less of the call.)
func (b *bench) sampleRSS(ctx context.Context, v cpVariant, path string, r int) (add, del rssSplit, err error) {
	conf := v.Conf(filepath.Join(b.dir, "ipam", "rss-"+v.Key))
	if v.Bin == b.tapbridge {
		// The reading is taken while the slow IPAM holds the call, so
		// tapbridge must exec it: in process, host-local is no binary
		// to slow down (its memory is in the peak rows).
		conf = withIPAMExec(conf)
	}
	c := pluginCall{Bin: v.Bin, Command: "ADD", ContainerID: fmt.Sprintf("%s-rss-%s-%d", b.id, v.Key, r),
		Netns: b.pods[0].Path(), IfName: podIfName, Path: path, Stdin: conf}
	result, add, err := midCallRSS(ctx, c)
	if err != nil {
		return add, del, fmt.Errorf("%s ADD: %w", v.Key, err)
	}
	c.Command, c.Stdin = "DEL", withPrevResult(conf, result)
	if _, del, err = midCallRSS(ctx, c); err != nil {
		return add, del, fmt.Errorf("%s DEL: %w", v.Key, err)
	}
	return add, del, nil
}

// midCallRSS runs c and reads its RSS half an IPAM pause after the start.
func midCallRSS(ctx context.Context, c pluginCall) (stdout []byte, split rssSplit, err error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, c.Bin)
	cmd.Env, cmd.Stdin, cmd.Stdout = c.env(), bytes.NewReader(c.Stdin), &out
	if err := cmd.Start(); err != nil {
		return nil, split, err
	}
	time.Sleep(ipamPause / 2)
	split, serr := readRSS(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		return nil, split, fmt.Errorf("%w: %s", err, out.Bytes())
	}
	return out.Bytes(), split, serr
}

func readRSS(pid int) (rssSplit, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rssSplit{}, err
	}
	defer f.Close()
	var s rssSplit
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "RssAnon":
			s.anon = kb
		case "RssFile":
			s.file = kb
		}
	}
	if s.file == 0 {
		return s, fmt.Errorf("no RssFile in /proc/%d/status", pid)
	}
	return s, sc.Err()
}
