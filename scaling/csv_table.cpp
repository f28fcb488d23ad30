#include "scaling/csv_table.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nats::scaling {

absl::StatusOr<CsvTable> CsvTable::Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

absl::StatusOr<CsvTable> CsvTable::Parse(const std::string& text, const std::string& path) {
  CsvTable table;
  table.path_ = path;
  std::vector<std::vector<std::string>> records;
  std::vector<int> starts;
  std::vector<std::string> record;
  std::string field;
  bool in_quotes = false, field_started = false, quoted_field = false;
  int line = 1, record_line = 1;
  auto end_field = [&] {
    record.push_back(field);
    field.clear();
    field_started = false;
    quoted_field = false;
  };
  auto end_record = [&] {
    // A blank line is one empty, unquoted field: not a record.
    if (!(record.size() == 1 && record[0].empty() && !field_started)) {
      records.push_back(record);
      starts.push_back(record_line);
    }
    record.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"') {
      if (!field.empty() || quoted_field) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line,
                         ": a quote inside an unquoted field; quote the whole field and double the quote"));
      }
      in_quotes = quoted_field = field_started = true;
    } else if (c == ',') {
      end_field();
      field_started = true;  // the next field exists even if empty: "a," is two fields
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      continue;  // CRLF: the '\n' ends the record
    } else if (c == '\n') {
      end_field();
      end_record();
      ++line;
      record_line = line;
    } else {
      if (quoted_field) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line, ": text after a closing quote; quote the whole field"));
      }
      field += c;
      field_started = true;
    }
  }
  if (in_quotes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", record_line, ": a quoted field is not closed before the end of the file"));
  }
  if (!field.empty() || field_started || !record.empty()) {
    end_field();
    end_record();
  }
  if (records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty; expected a header row of column names"));
  }
  table.columns_ = records[0];
  for (std::string& name : table.columns_) name = std::string(absl::StripAsciiWhitespace(name));
  for (size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != table.columns_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", starts[r], ": ", records[r].size(),
                                                     " fields, but the header has ", table.columns_.size()));
    }
    table.rows_.push_back(std::move(records[r]));
    table.lines_.push_back(starts[r]);
  }
  return table;
}

int CsvTable::ColumnIndex(const std::string& name) const {
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (columns_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::string CsvTable::ColumnList() const { return absl::StrJoin(columns_, ", "); }

absl::StatusOr<double> CsvTable::PositiveNumber(int row, int column) const {
  const std::string text(absl::StripAsciiWhitespace(Cell(row, column)));
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", Line(row), ": column '", columns_[column],
                                                   "': ", what, "; remove the row or mark its status"));
  };
  if (text.empty()) return error("empty");
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return error(absl::StrCat("'", text, "' is not a number"));
  if (!std::isfinite(value)) return error(absl::StrCat("'", text, "' is not finite"));
  if (value <= 0) return error(absl::StrCat("'", text, "' is not positive"));
  return value;
}

absl::StatusOr<Observations> ReadObservations(const CsvTable& table, const ObservationColumns& columns) {
  Observations out;
  out.path = table.path();
  out.rows_read = table.num_rows();
  struct Required {
    const std::string& name;
    const char* flag;
  };
  for (const Required& required : {Required{columns.params, "--params"}, Required{columns.tokens, "--tokens"},
                                   Required{columns.loss, "--loss"}}) {
    if (!table.HasColumn(required.name)) {
      return absl::InvalidArgumentError(absl::StrCat(table.path(), ": no column '", required.name,
                                                     "' (columns: ", table.ColumnList(), "); name it with ",
                                                     required.flag, " COL"));
    }
  }
  const int params = table.ColumnIndex(columns.params), tokens = table.ColumnIndex(columns.tokens);
  const int loss = table.ColumnIndex(columns.loss), kv = table.ColumnIndex(columns.kv);
  const int budget = table.ColumnIndex(columns.budget), flops = table.ColumnIndex(columns.flops);
  const int status = table.ColumnIndex(columns.status), attention = table.ColumnIndex(columns.attention);
  const int law = columns.law_column.empty() ? -1 : table.ColumnIndex(columns.law_column);
  if (!columns.law_column.empty() && law < 0) {
    return absl::InvalidArgumentError(absl::StrCat(table.path(), ": no column '", columns.law_column,
                                                   "' for --law_rows ", columns.law_column, "=",
                                                   columns.law_value, "; use a column of the table, or all"));
  }
  out.has_kv = kv >= 0;
  out.has_budget = budget >= 0;
  out.has_flops = flops >= 0;
  auto optional_number = [&](int row, int column) -> absl::StatusOr<std::optional<double>> {
    if (column < 0 || absl::StripAsciiWhitespace(table.Cell(row, column)).empty()) return std::nullopt;
    absl::StatusOr<double> value = table.PositiveNumber(row, column);
    if (!value.ok()) return value.status();
    return std::optional<double>(*value);
  };
  for (int row = 0; row < table.num_rows(); ++row) {
    if (status >= 0) {
      const std::string value(absl::StripAsciiWhitespace(table.Cell(row, status)));
      if (value != "ok") {
        out.skipped.push_back({table.Line(row), absl::StrCat("status ", value.empty() ? "empty" : value)});
        continue;
      }
    }
    Observation o;
    o.line = table.Line(row);
    for (auto [column, target] : {std::pair{params, &o.params}, {tokens, &o.tokens}, {loss, &o.loss}}) {
      absl::StatusOr<double> value = table.PositiveNumber(row, column);
      if (!value.ok()) return value.status();
      *target = *value;
    }
    for (auto [column, target] : {std::pair{budget, &o.budget}, {flops, &o.flops}, {kv, &o.kv}}) {
      absl::StatusOr<std::optional<double>> value = optional_number(row, column);
      if (!value.ok()) return value.status();
      *target = *value;
    }
    if (o.kv && *o.kv > 1.0) {
      return absl::InvalidArgumentError(absl::StrCat(table.path(), ":", o.line, ": column '", columns.kv,
                                                     "': ", *o.kv,
                                                     " is above 1 (a KV fraction is in (0, 1])"));
    }
    // NATS_SPEC: a dense model keeps every key, so its KV fraction is 1 even where the sweep left it empty.
    if (!o.kv && kv >= 0 && attention >= 0 &&
        absl::AsciiStrToUpper(absl::StripAsciiWhitespace(table.Cell(row, attention))) == "DENSE") {
      o.kv = 1.0;
    }
    if (kv >= 0 && !o.kv) ++out.kv_missing;
    if (law >= 0) o.law_row = absl::StripAsciiWhitespace(table.Cell(row, law)) == columns.law_value;
    out.rows.push_back(o);
  }
  return out;
}

}  // namespace nats::scaling
