// Package merkle holds aitrail's view of the log's Merkle tree: the C2SP
// tlog-tiles layout (tile paths, entry bundles), C2SP tlog-checkpoint signed
// notes, and an incremental tree builder.
//
// All hashing and proof math is golang.org/x/mod/sumdb/tlog's (RFC 6962);
// signatures are golang.org/x/mod/sumdb/note's (Ed25519). This package only
// arranges their results into the published formats. It performs no I/O.
package merkle

import (
	"golang.org/x/mod/sumdb/tlog"
)

// Tile geometry fixed by C2SP tlog-tiles.
const (
	// TileHeight is the number of tree levels one tile spans.
	TileHeight = 8
	// TileWidth is the number of hashes in a full tile, and of entries in a
	// full entry bundle.
	TileWidth = 1 << TileHeight
	// HashSize is the size of one hash in a tile.
	HashSize = tlog.HashSize
)

// Hash is a SHA-256 Merkle tree hash.
type Hash = tlog.Hash

// LeafHash returns the RFC 6962 leaf hash of a stored record.
func LeafHash(record []byte) Hash { return tlog.RecordHash(record) }
