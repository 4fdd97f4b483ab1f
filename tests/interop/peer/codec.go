package main

import (
	"bufio"
	"bytes"
	"compress/lzw"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-msgpack/codec"
)

// Structs with the field names, types and tags of memberlist 0.2.2's wire
// structs (net.go). go-msgpack encodes by reflection, so these produce the
// same bytes as memberlist's unexported types.
type wirePing struct {
	SeqNo      uint32
	Node       string
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}

type wireIndirectPing struct {
	SeqNo      uint32
	Target     []byte
	Port       uint16
	Node       string
	Nack       bool
	SourceAddr []byte `codec:",omitempty"`
	SourcePort uint16 `codec:",omitempty"`
	SourceNode string `codec:",omitempty"`
}

type wireAck struct {
	SeqNo   uint32
	Payload []byte
}

type wireNack struct{ SeqNo uint32 }

type wireErr struct{ Error string }

type wireSuspect struct {
	Incarnation uint32
	Node        string
	From        string
}

type wireAlive struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

type wireDead struct {
	Incarnation uint32
	Node        string
	From        string
}

type wirePushPullHeader struct {
	Nodes        int
	UserStateLen int
	Join         bool
}

type wirePushNodeState struct {
	Name        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Incarnation uint32
	State       int
	Vsn         []uint8
}

type wireCompress struct {
	Algo uint8
	Buf  []byte
}

func newWire(kind string) (interface{}, error) {
	switch kind {
	case "ping":
		return &wirePing{}, nil
	case "indirect-ping":
		return &wireIndirectPing{}, nil
	case "ack":
		return &wireAck{}, nil
	case "nack":
		return &wireNack{}, nil
	case "err":
		return &wireErr{}, nil
	case "suspect":
		return &wireSuspect{}, nil
	case "alive":
		return &wireAlive{}, nil
	case "dead":
		return &wireDead{}, nil
	case "push-pull-header":
		return &wirePushPullHeader{}, nil
	case "push-node-state":
		return &wirePushNodeState{}, nil
	case "compress":
		return &wireCompress{}, nil
	case "tags":
		return &map[string]string{}, nil
	}
	return nil, fmt.Errorf("unknown wire type %q", kind)
}

// runCodec replies to codec commands until stdin closes. Byte fields travel in
// JSON as base64, which is how encoding/json writes []byte.
func runCodec() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<26)
	for scanner.Scan() {
		var cmd command
		if err := json.Unmarshal(scanner.Bytes(), &cmd); err != nil {
			stdout.write(map[string]interface{}{"ok": false, "error": "invalid JSON command: " + err.Error()})
			continue
		}
		result, err := codecCommand(&cmd)
		if err != nil {
			fail(&cmd, err)
		} else {
			reply(&cmd, true, result)
		}
	}
}

func codecCommand(cmd *command) (map[string]interface{}, error) {
	switch cmd.Cmd {
	case "lzw-compress":
		raw, err := hex.DecodeString(cmd.Hex)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		w := lzw.NewWriter(&buf, lzw.LSB, 8)
		if _, err := w.Write(raw); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return map[string]interface{}{"hex": hex.EncodeToString(buf.Bytes())}, nil
	case "lzw-decompress":
		raw, err := hex.DecodeString(cmd.Hex)
		if err != nil {
			return nil, err
		}
		r := lzw.NewReader(bytes.NewReader(raw), lzw.LSB, 8)
		defer r.Close()
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, r); err != nil {
			return nil, err
		}
		return map[string]interface{}{"hex": hex.EncodeToString(buf.Bytes())}, nil
	case "msgpack-encode":
		v, err := newWire(cmd.Type)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(cmd.Fields, v); err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(v); err != nil {
			return nil, err
		}
		return map[string]interface{}{"hex": hex.EncodeToString(buf.Bytes())}, nil
	case "msgpack-decode":
		v, err := newWire(cmd.Type)
		if err != nil {
			return nil, err
		}
		raw, err := hex.DecodeString(cmd.Hex)
		if err != nil {
			return nil, err
		}
		if err := codec.NewDecoder(bytes.NewReader(raw), &codec.MsgpackHandle{}).Decode(v); err != nil {
			return nil, err
		}
		return map[string]interface{}{"fields": v}, nil
	}
	return nil, fmt.Errorf("unknown codec command %q", cmd.Cmd)
}
