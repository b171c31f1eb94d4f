package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Entry is one record of the log as followers see it.
type Entry struct {
	// Index is the record's position in the log (its Merkle leaf index).
	Index uint64
	// Data is the stored record: the canonical JSON the leaf hash commits to.
	// It may be shared with other followers and must not be modified.
	Data []byte
	// Value is the decoded form of Data its appender gave (Item.Value), when
	// the entry was served from memory, or nil. A follower that uses it must
	// reach the same result as from decoding Data, which it must still do
	// when Value is nil.
	Value any
	// Offset is where the record's frame begins in the segment file that
	// holds it. With Index it locates the record for ReadRecords, which is
	// how the query index reads records back instead of keeping copies.
	Offset int64
}

// Loc locates a record for ReadRecords: its index and its Entry.Offset.
type Loc struct {
	Index  uint64
	Offset int64
}

// Source is the read side of the ledger that followers consume.
//
// All methods are safe for concurrent use. Only committed (durable) records
// are ever visible through a Source.
type Source interface {
	// Size returns the number of committed records.
	Size() uint64
	// Entries returns up to max committed records starting at index from, in
	// order. It returns fewer (possibly none) when the log is shorter, and
	// may return fewer (at least one) to bound the memory they take.
	Entries(ctx context.Context, from uint64, max int) ([]Entry, error)
	// Wait blocks until the log holds more than n records or ctx ends.
	Wait(ctx context.Context, n uint64) error
}

// Handler consumes the log on behalf of a follower (the query index, the
// detector, an exporter, the archiver).
//
// Delivery is at least once: after a crash, entries after the last persisted
// cursor are delivered again, so Apply must be idempotent.
type Handler interface {
	// Cursor returns the index of the next entry the handler needs: every
	// entry before it has been applied durably.
	Cursor(ctx context.Context) (uint64, error)
	// Apply processes consecutive entries and, when it returns nil, has
	// durably recorded that the cursor is now the last entry's index + 1.
	// Doing both in one transaction makes delivery effectively exactly once.
	Apply(ctx context.Context, entries []Entry) error
}

// FollowOptions tune Follow. The zero value is usable.
type FollowOptions struct {
	// Name identifies the follower in logs and errors.
	Name string
	// BatchSize is the most entries handed to one Apply; default 1000.
	BatchSize int
	// RetryDelay is the pause after a failed read or Apply; default 1s.
	RetryDelay time.Duration
	// Logger receives errors; default slog.Default().
	Logger *slog.Logger
	// OnApply, if set, is called after every successful Apply with the new
	// cursor; metrics use it to publish follower lag.
	OnApply func(cursor uint64)
	// Linger, if positive, lets entries accumulate for up to this long
	// before a batch smaller than BatchSize is applied. Fewer, larger
	// transactions cost a follower such as the index much less CPU when
	// records arrive one by one, at the price of that much more lag.
	Linger time.Duration
}

// DefaultFollowBatch is the default number of entries per Apply.
const DefaultFollowBatch = 1000

// Follow feeds h every committed entry from h's cursor on, in order, until
// ctx ends. Failures are logged and retried after RetryDelay; Follow returns
// only ctx's error.
func Follow(ctx context.Context, src Source, h Handler, opts FollowOptions) error {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultFollowBatch
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("follower", opts.Name)

	cursor, err := h.Cursor(ctx)
	for err != nil {
		log.Error("couldn't read follower cursor", "err", err)
		if err := sleep(ctx, opts.RetryDelay); err != nil {
			return err
		}
		cursor, err = h.Cursor(ctx)
	}
	if opts.OnApply != nil {
		opts.OnApply(cursor)
	}
	for {
		if err := src.Wait(ctx, cursor); err != nil {
			return err
		}
		if opts.Linger > 0 && src.Size()-cursor < uint64(opts.BatchSize) {
			if err := sleep(ctx, opts.Linger); err != nil {
				return err
			}
		}
		entries, err := src.Entries(ctx, cursor, opts.BatchSize)
		if err == nil && len(entries) > 0 && entries[0].Index != cursor {
			err = fmt.Errorf("log returned index %d, want %d", entries[0].Index, cursor)
		}
		if err == nil && len(entries) > 0 {
			err = h.Apply(ctx, entries)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Error("follower failed; retrying", "cursor", cursor, "err", err)
			if err := sleep(ctx, opts.RetryDelay); err != nil {
				return err
			}
			continue
		}
		cursor += uint64(len(entries))
		if opts.OnApply != nil {
			opts.OnApply(cursor)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
