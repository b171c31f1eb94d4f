package event

// Defaults for Limits.
const (
	// DefaultMaxContentBytes is the largest content, in bytes of JSON as
	// sent, that one event may carry.
	DefaultMaxContentBytes int64 = 16 << 20
	// DefaultMaxBatchEvents is the largest number of events in one request.
	DefaultMaxBatchEvents = 10000
	// DefaultMaxDepth is the deepest nesting of JSON objects and arrays
	// allowed within one event, the event object itself being level 1.
	DefaultMaxDepth = 64

	// maxDepthCap bounds MaxDepth whatever the configuration says: the
	// scanner recurses once per level, and encoding/json refuses deeper
	// documents anyway.
	maxDepthCap = 10000
)

// Limits bounds what Decode and Normalize accept from a producer. A zero or
// negative field means its default (DefaultLimits), so the zero Limits is
// usable; MaxDepth above 10000 is treated as 10000.
type Limits struct {
	// MaxContentBytes is the largest content of one event, counted in bytes
	// of the JSON value as sent. Exceeding it is a "too_large" problem.
	MaxContentBytes int64
	// MaxBatchEvents is the largest number of events in one request body.
	// Exceeding it is a "too_large" problem.
	MaxBatchEvents int
	// MaxDepth is the deepest nesting of objects and arrays within one
	// event, counting the event object as level 1 (so content that is an
	// object is level 2). Batch wrappers ({"events":[…]}) do not count.
	MaxDepth int
}

// DefaultLimits returns the limits aitrail applies unless configured
// otherwise: 16 MiB of content, 10000 events per request and nesting depth 64.
func DefaultLimits() Limits {
	return Limits{
		MaxContentBytes: DefaultMaxContentBytes,
		MaxBatchEvents:  DefaultMaxBatchEvents,
		MaxDepth:        DefaultMaxDepth,
	}
}

// orDefaults fills zero or negative fields with their defaults and caps
// MaxDepth.
func (l Limits) orDefaults() Limits {
	if l.MaxContentBytes <= 0 {
		l.MaxContentBytes = DefaultMaxContentBytes
	}
	if l.MaxBatchEvents <= 0 {
		l.MaxBatchEvents = DefaultMaxBatchEvents
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	l.MaxDepth = min(l.MaxDepth, maxDepthCap)
	return l
}
