package hubtest

import dto "github.com/prometheus/client_model/go"

// SeriesValue returns the value of the first series of fam whose labels
// include want: a counter's or gauge's value, a histogram's sample count;
// -1 when there is none (or fam is nil).
func SeriesValue(fam *dto.MetricFamily, want map[string]string) float64 {
next:
	for _, m := range fam.GetMetric() {
		got := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}
