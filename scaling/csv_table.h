// scaling/csv_table.h
//
// The input of `nats fit`: a CSV table and the scaling-law observations read out of it.
//
// CsvTable: RFC 4180 CSV with a header row: comma-separated, fields in double quotes may hold commas, line
// breaks and "" for a quote; LF or CRLF line ends; blank lines are ignored. Every record must have as many
// fields as the header. Lines are counted from 1 (the header) so that an error names the line an editor
// shows.
//
// ReadObservations: the rows a fit uses. A row whose `status` column (when the table has one) is not "ok" is
// skipped and recorded with its reason; every other row must hold a finite, positive number in each of the
// params / tokens / loss columns, else the whole read fails naming file:line, the column and the value (a
// fit that silently drops a typo would be fitted to different data than the user thinks).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace nats::scaling {

class CsvTable {
 public:
  static absl::StatusOr<CsvTable> Read(const std::string& path);
  // `text` as if read from a file named `path` (path only names the table in errors).
  static absl::StatusOr<CsvTable> Parse(const std::string& text, const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& columns() const { return columns_; }
  int num_rows() const { return static_cast<int>(rows_.size()); }
  bool HasColumn(const std::string& name) const { return ColumnIndex(name) >= 0; }
  int ColumnIndex(const std::string& name) const;  // -1 when absent
  // The columns as one line, for errors: "params, tokens, loss".
  std::string ColumnList() const;

  // The line of the file where row `row` (0-based, header excluded) starts.
  int Line(int row) const { return lines_[row]; }
  const std::string& Cell(int row, int column) const { return rows_[row][column]; }
  // Cell(row, column) as a finite number > 0, or an InvalidArgument error "path:line: column 'name': ...".
  absl::StatusOr<double> PositiveNumber(int row, int column) const;

 private:
  std::string path_;
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<int> lines_;
};

// Which column holds what; --params / --tokens / --loss / --kv / --budget of `nats fit`.
struct ObservationColumns {
  std::string params =
      "params";  // N: parameters (the CSV's convention; ours is non-embedding, docs/scaling.md)
  std::string tokens = "tokens";        // D: training tokens
  std::string loss = "loss";            // validation loss in nats per token
  std::string kv = "kv_fraction";       // NAtS KV-cache fraction kappa in (0, 1]; dense = 1
  std::string budget = "budget_flops";  // the IsoFLOP budget a run was planned for
  std::string flops = "flops";          // the run's training FLOPs (fallback for grouping by budget)
  std::string status = "status";        // rows whose status is not "ok" are skipped
  std::string attention = "attention";  // "DENSE" lets an empty kv value mean kappa = 1
  // The rows of the laws (Approaches 3 and 2): those whose column `law_column` holds `law_value`; empty
  // column: every row. `nats fit --law_rows`; the KV fit always takes every usable row.
  std::string law_column, law_value;
};

struct Observation {
  int line = 0;
  double params = 0, tokens = 0, loss = 0;
  std::optional<double> kv;      // absent: not usable for the KV fit
  std::optional<double> budget;  // budget column, when present and non-empty
  std::optional<double> flops;   // flops column, when present and non-empty
  bool law_row = true;           // selected by ObservationColumns::law_column / law_value
};

struct SkippedRow {
  int line = 0;
  std::string reason;  // "status failed"
};

struct Observations {
  std::string path;
  int rows_read = 0;
  std::vector<Observation> rows;                               // the usable ones
  std::vector<SkippedRow> skipped;                             // rows_read == rows.size() + skipped.size()
  bool has_kv = false, has_budget = false, has_flops = false;  // whether the table has those columns
  int kv_missing = 0;  // usable rows without a kv value (left out of the KV fit only)
};

// Errors (InvalidArgument, one line naming the file): a missing params / tokens / loss column (with the
// columns present and the flag that renames it), a bad value in a used row (file:line, column, value), a kv
// value outside (0, 1], a law_column the table does not have.
absl::StatusOr<Observations> ReadObservations(const CsvTable& table, const ObservationColumns& columns);

}  // namespace nats::scaling
