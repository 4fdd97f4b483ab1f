package main

import (
	"bytes"
	"encoding/hex"
	"sync"

	"github.com/hashicorp/go-msgpack/codec"
	"github.com/hashicorp/memberlist"
)

// delegate reports memberlist callbacks as JSON events on stdout and serves
// the node metadata and push/pull user state that the flags set.
type delegate struct {
	mu    sync.Mutex
	meta  []byte
	state []byte
	list  *memberlist.Memberlist
}

func (d *delegate) setMeta(meta []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.meta = meta
}

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return d.meta[:limit]
	}
	return d.meta
}

func (d *delegate) NotifyMsg(msg []byte) {
	stdout.write(map[string]interface{}{"event": "user", "payload_hex": hex.EncodeToString(msg)})
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d *delegate) LocalState(join bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	stdout.write(map[string]interface{}{"event": "merge", "join": join, "state_hex": hex.EncodeToString(buf)})
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.notify("join", n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.notify("leave", n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.notify("update", n) }

func (d *delegate) notify(kind string, n *memberlist.Node) {
	ev := nodeJSON(n)
	ev["event"] = kind
	stdout.write(ev)
}

// encodeTags writes serf's tag encoding: a 0xff byte, then the tags as a
// msgpack map with go-msgpack's default handle (the one serf uses).
func encodeTags(tags map[string]string) []byte {
	var buf bytes.Buffer
	buf.WriteByte(0xff)
	enc := codec.NewEncoder(&buf, &codec.MsgpackHandle{})
	if err := enc.Encode(tags); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
