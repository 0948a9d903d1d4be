// Command harness drives the OpenTelemetry Collector contrib tailsamplingprocessor
// (the release pinned in go.mod) in-process, for obsflow's differential tests.
//
// Usage: harness -config CONFIG.json < FRAMES
//
// CONFIG.json is the processor's configuration as JSON (the keys of the Collector's
// `tail_sampling` block). Standard input holds OTLP trace batches, each a 4-byte
// big-endian length followed by a serialized ExportTraceServiceRequest (wire-compatible
// with TracesData). Every batch is given to the processor in order with ConsumeTraces;
// the processor is then shut down, which decides every pending trace (unless
// drop_pending_traces_on_shutdown is set). The ids of the traces whose spans reached the
// next consumer are printed to standard output, lowercase hex, one per line, sorted.
// It opens no network connection.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func loadConfig(path string) (*tailsamplingprocessor.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// json.Number keeps int64 values exact (a float64 would round 2^53+5)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg := tailsamplingprocessor.NewFactory().CreateDefaultConfig().(*tailsamplingprocessor.Config)
	if err := confmap.NewFromStringMap(m).Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func readBatches(r io.Reader) ([]ptrace.Traces, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var out []ptrace.Traces
	var hdr [4]byte
	um := &ptrace.ProtoUnmarshaler{}
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("frame %d header: %w", len(out), err)
		}
		buf := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, fmt.Errorf("frame %d body: %w", len(out), err)
		}
		td, err := um.UnmarshalTraces(buf)
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", len(out), err)
		}
		out = append(out, td)
	}
}

func run() error {
	cfgPath := flag.String("config", "", "processor configuration (JSON)")
	flag.Parse()
	if *cfgPath == "" {
		return errors.New("-config is required")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	batches, err := readBatches(os.Stdin)
	if err != nil {
		return err
	}
	ctx := context.Background()
	sink := new(consumertest.TracesSink)
	factory := tailsamplingprocessor.NewFactory()
	proc, err := factory.CreateTraces(ctx, processortest.NewNopSettings(factory.Type()), cfg, sink)
	if err != nil {
		return err
	}
	if err := proc.Start(ctx, componenttest.NewNopHost()); err != nil {
		return err
	}
	for i, td := range batches {
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			return fmt.Errorf("batch %d: %w", i, err)
		}
	}
	if err := proc.Shutdown(ctx); err != nil {
		return err
	}
	kept := map[string]struct{}{}
	for _, td := range sink.AllTraces() {
		for _, rs := range td.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					kept[sp.TraceID().String()] = struct{}{}
				}
			}
		}
	}
	ids := make([]string, 0, len(kept))
	for id := range kept {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	w := bufio.NewWriter(os.Stdout)
	for _, id := range ids {
		fmt.Fprintln(w, id)
	}
	return w.Flush()
}
