// Command tapbridge-agent is the node agent: it serves the guests of the
// tapbridge attachments on this node their IPAM addresses (DHCPv4,
// DHCPv6, router advertisements) on their own host ports, learns the IPv6
// link-locals they claim into their ports' tables (learnLinkLocal), and
// exports metrics. It runs in the node's network namespace (a DaemonSet
// with hostNetwork), one per dataDir, and keeps no state of its own: the
// plugin's records and the ports' tables are the truth.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tapbridge/tapbridge-cni/internal/agent"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Version is set at build time.
var Version = "dev"

// DefaultMetricsAddr is where /metrics is served unless told otherwise:
// 9741 is unassigned and clear of the usual exporters' 9100-9400 range.
const DefaultMetricsAddr = ":9741"

type flags struct {
	dataDir     string
	metricsAddr string
	logLevel    slog.Level
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("tapbridge-agent", flag.ContinueOnError)
	fs.StringVar(&f.dataDir, "data-dir", "/var/lib/cni/tapbridge", "the plugin's dataDir, whose attachments the agent serves")
	fs.StringVar(&f.metricsAddr, "metrics-addr", DefaultMetricsAddr, "listen address of the Prometheus /metrics endpoint (empty: none)")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return flags{}, err
	}
	if fs.NArg() > 0 {
		return flags{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tapbridge-agent:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: f.logLevel}))
	if err := run(f, log); err != nil {
		log.Error("tapbridge-agent stopped", "err", err)
		os.Exit(1)
	}
}

// run holds the agent lock for as long as it serves, so the plugin's
// STATUS sees an agent exactly while one runs.
func run(f flags, log *slog.Logger) error {
	lock, err := state.LockAgent(f.dataDir)
	if err != nil {
		return err
	}
	defer lock.Release()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := agent.New(agent.Options{Dir: f.dataDir, Log: log, Registry: reg})
	srv, err := serveMetrics(f.metricsAddr, reg, log)
	if err != nil {
		return err
	}
	log.Info("tapbridge-agent started", "version", Version, "dataDir", f.dataDir, "metrics", f.metricsAddr)
	err = a.Run(ctx)
	if srv != nil {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Shutdown(shutdown))
	}
	if err == nil {
		log.Info("tapbridge-agent stopped")
	}
	return err
}

// serveMetrics listens before it returns, so a port in use fails the
// start instead of a goroutine later.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return srv, nil
}
