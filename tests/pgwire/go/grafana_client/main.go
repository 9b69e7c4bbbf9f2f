// Command grafana_client talks to a PostgreSQL server the way Grafana's PostgreSQL data source
// does: pgconn Exec (simple protocol, several statements allowed, text results) and decoding of
// every value by its type OID through pgtype. It also runs parameterised queries through
// pgconn ExecParams (extended protocol, binary results where asked), as pgx's Query does.
//
// Usage: grafana_client <dsn> <queries.json>
// queries.json is a JSON array of {"sql": "...", "params": ["text", null],
// "param_oids": [1184], "result_formats": [1]}; entries without "params" use Exec.
// Output: one JSON object per query on stdout:
// {"results": [{"columns": [{"name", "oid"}], "rows": [[...]], "tag": "SELECT 1"}]}
// or {"error": {"code": "42P01", "message": "..."}}.
// Decoded values are printed as JSON: timestamps in RFC 3339 (UTC), numbers as numbers,
// byte strings in hex, intervals as {"months","days","microseconds"}, and a failed decode as
// the string "DECODE ERROR: ...", so the caller can tell what Grafana would have seen.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgproto3/v2"
	"github.com/jackc/pgtype"
)

type querySpec struct {
	SQL           string    `json:"sql"`
	Params        []*string `json:"params"`
	ParamOIDs     []uint32  `json:"param_oids"`
	ResultFormats []int16   `json:"result_formats"`
}

type column struct {
	Name string `json:"name"`
	OID  uint32 `json:"oid"`
}

type result struct {
	Columns []column        `json:"columns"`
	Rows    [][]interface{} `json:"rows"`
	Tag     string          `json:"tag"`
}

type failure struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type answer struct {
	Results []result `json:"results,omitempty"`
	Error   *failure `json:"error,omitempty"`
}

func render(v pgtype.Value) interface{} {
	if v.Get() == nil {
		return nil
	}
	switch x := v.(type) {
	case *pgtype.Timestamptz:
		return x.Time.UTC().Format(time.RFC3339Nano)
	case *pgtype.Timestamp:
		return x.Time.Format("2006-01-02T15:04:05.999999999")
	case *pgtype.Date:
		return x.Time.Format("2006-01-02")
	case *pgtype.Int2:
		return x.Int
	case *pgtype.Int4:
		return x.Int
	case *pgtype.Int8:
		return x.Int
	case *pgtype.Float4:
		return x.Float
	case *pgtype.Float8:
		return x.Float
	case *pgtype.Bool:
		return x.Bool
	case *pgtype.Text:
		return x.String
	case *pgtype.Varchar:
		return x.String
	case *pgtype.Numeric:
		var f float64
		if err := x.AssignTo(&f); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return f
	case *pgtype.Bytea:
		return hex.EncodeToString(x.Bytes)
	case *pgtype.Interval:
		return map[string]int64{
			"months": int64(x.Months), "days": int64(x.Days), "microseconds": x.Microseconds,
		}
	case *pgtype.UUID:
		buf, err := x.EncodeText(nil, nil)
		if err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return string(buf)
	case *pgtype.TextArray:
		var out []*string
		if err := x.AssignTo(&out); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return out
	case *pgtype.VarcharArray:
		var out []*string
		if err := x.AssignTo(&out); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return out
	case *pgtype.Int8Array:
		var out []*int64
		if err := x.AssignTo(&out); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return out
	case *pgtype.Int4Array:
		var out []*int32
		if err := x.AssignTo(&out); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return out
	case *pgtype.Float8Array:
		var out []*float64
		if err := x.AssignTo(&out); err != nil {
			return "DECODE ERROR: " + err.Error()
		}
		return out
	}
	return v.Get()
}

func decode(ci *pgtype.ConnInfo, fd pgproto3.FieldDescription, raw []byte) interface{} {
	if raw == nil {
		return nil
	}
	dt, ok := ci.DataTypeForOID(fd.DataTypeOID)
	if !ok {
		return "UNKNOWN OID " + fmt.Sprint(fd.DataTypeOID) + ": " + string(raw)
	}
	value := pgtype.NewValue(dt.Value)
	var err error
	if fd.Format == 1 {
		decoder, ok := value.(pgtype.BinaryDecoder)
		if !ok {
			return "NO BINARY DECODER"
		}
		err = decoder.DecodeBinary(ci, raw)
	} else {
		decoder, ok := value.(pgtype.TextDecoder)
		if !ok {
			return "NO TEXT DECODER"
		}
		err = decoder.DecodeText(ci, raw)
	}
	if err != nil {
		return "DECODE ERROR: " + err.Error()
	}
	return render(value)
}

func convert(ci *pgtype.ConnInfo, r *pgconn.Result) result {
	out := result{Tag: string(r.CommandTag), Rows: [][]interface{}{}, Columns: []column{}}
	for _, fd := range r.FieldDescriptions {
		out.Columns = append(out.Columns, column{Name: string(fd.Name), OID: fd.DataTypeOID})
	}
	for _, row := range r.Rows {
		decoded := make([]interface{}, len(row))
		for i, raw := range row {
			decoded[i] = decode(ci, r.FieldDescriptions[i], raw)
		}
		out.Rows = append(out.Rows, decoded)
	}
	return out
}

func fail(err error) *failure {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return &failure{Code: pgErr.Code, Message: pgErr.Message}
	}
	return &failure{Code: "", Message: err.Error()}
}

func run(ctx context.Context, conn *pgconn.PgConn, ci *pgtype.ConnInfo, q querySpec) answer {
	if q.Params == nil {
		results, err := conn.Exec(ctx, q.SQL).ReadAll()
		if err != nil {
			return answer{Error: fail(err)}
		}
		var out []result
		for _, r := range results {
			out = append(out, convert(ci, r))
		}
		return answer{Results: out}
	}
	values := make([][]byte, len(q.Params))
	for i, p := range q.Params {
		if p != nil {
			values[i] = []byte(*p)
		}
	}
	r := conn.ExecParams(ctx, q.SQL, values, q.ParamOIDs, nil, q.ResultFormats).Read()
	if r.Err != nil {
		return answer{Error: fail(r.Err)}
	}
	return answer{Results: []result{convert(ci, r)}}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: grafana_client <dsn> <queries.json>")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var queries []querySpec
	if err := json.Unmarshal(raw, &queries); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, os.Args[1])
	if err != nil {
		out, _ := json.Marshal(answer{Error: fail(err)})
		fmt.Println(string(out))
		os.Exit(1)
	}
	defer conn.Close(ctx)
	ci := pgtype.NewConnInfo()
	encoder := json.NewEncoder(os.Stdout)
	for _, q := range queries {
		if err := encoder.Encode(run(ctx, conn, ci, q)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
