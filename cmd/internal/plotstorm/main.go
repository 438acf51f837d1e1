// Command plotstorm draws the CSV files of `hubbench --scenario storm
// --csv FILE` (ms from t0, devices live, connected, refusals, failed
// dials) as one PNG: devices live over time, one line per file, and the
// refusals so far as a dashed line of the same colour.
//
//	go run . -o ../../../docs/storm.png -title "..." drop.csv=drop restart.csv=restart
//
// It is a module of its own so that gonum.org/v1/plot and its font and
// image dependencies stay out of the hub's go.mod.
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "plotstorm:", err)
		os.Exit(1)
	}
}

// series are one CSV file's columns.
type series struct {
	label          string
	live, refusals plotter.XYs
}

func run(args []string) error {
	fs := flag.NewFlagSet("plotstorm", flag.ContinueOnError)
	out := fs.String("o", "storm.png", "the PNG to write")
	title := fs.String("title", "Reconnect storm", "the plot's title")
	width := fs.Float64("width", 20, "width in cm")
	height := fs.Float64("height", 13, "height in cm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: plotstorm [-o out.png] [-title T] file.csv[=label] ...")
	}
	p := plot.New()
	p.Title.Text = *title
	p.X.Label.Text = "seconds after the cut (drop) or SIGTERM (restart)"
	p.Y.Label.Text = "devices"
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	colours := []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	}
	top := 0.0
	for i, arg := range fs.Args() {
		path, label, ok := strings.Cut(arg, "=")
		if !ok {
			label = path
		}
		s, err := read(path, label)
		if err != nil {
			return err
		}
		for _, xy := range append(s.live, s.refusals...) {
			top = max(top, xy.Y)
		}
		c := colours[i%len(colours)]
		live, err := plotter.NewLine(s.live)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		live.Color, live.Width = c, vg.Points(1.5)
		ref, err := plotter.NewLine(s.refusals)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ref.Color, ref.Width, ref.Dashes = c, vg.Points(1), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(live, ref)
		p.Legend.Add(s.label+": live", live)
		p.Legend.Add(s.label+": refusals", ref)
	}
	p.Y.Min, p.X.Min = 0, 0
	p.Y.Max = top * 1.7 // room for the legend above the lines
	p.Legend.ThumbnailWidth = vg.Points(24)
	p.Legend.Padding = vg.Points(1)
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(6), -vg.Points(4)
	return p.Save(vg.Length(*width)*vg.Centimeter, vg.Length(*height)*vg.Centimeter, *out)
}

// read reads one CSV file of hubbench: ms, live, connected, refusals,
// dial_errors.
func read(path, label string) (*series, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < 2 || len(rows[0]) < 4 || rows[0][0] != "ms" || rows[0][1] != "live" || rows[0][3] != "refusals" {
		return nil, fmt.Errorf("%s: not a hubbench storm CSV (want the header ms,live,connected,refusals,...)", path)
	}
	s := &series{label: label}
	for n, r := range rows[1:] {
		if len(r) < 4 {
			return nil, fmt.Errorf("%s:%d: %d fields", path, n+2, len(r))
		}
		t, err1 := strconv.ParseFloat(r[0], 64)
		live, err2 := strconv.ParseFloat(r[1], 64)
		ref, err3 := strconv.ParseFloat(r[3], 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n+2, err)
		}
		s.live = append(s.live, plotter.XY{X: t / 1000, Y: live})
		s.refusals = append(s.refusals, plotter.XY{X: t / 1000, Y: ref})
	}
	return s, nil
}
