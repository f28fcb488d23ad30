// scaling/csv_table.h: RFC 4180 quoting (commas, quotes and line breaks inside quotes), CRLF line ends, the
// errors a user can cause (each naming the file, the line and the column, and the fix), status filtering and
// the KV-fraction rules of ReadObservations.
#include "scaling/csv_table.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace nats::scaling {
namespace {

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(CsvTable, QuotedFieldsHoldCommasQuotesAndLineBreaks) {
  auto table = CsvTable::Parse(
      "name,params,note\n"
      "\"a,b\",1e6,\"say \"\"hi\"\"\"\n"
      "\"two\nlines\",2e6,\n"
      "plain,3e6,\"\"\n",
      "t.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->num_rows(), 3);
  EXPECT_EQ(table->Cell(0, 0), "a,b");
  EXPECT_EQ(table->Cell(0, 2), "say \"hi\"");
  EXPECT_EQ(table->Cell(1, 0), "two\nlines");
  EXPECT_EQ(table->Cell(1, 2), "");
  EXPECT_EQ(table->Cell(2, 2), "");
  // Lines are the file's: the record after the two-line field starts on line 5.
  EXPECT_EQ(table->Line(0), 2);
  EXPECT_EQ(table->Line(1), 3);
  EXPECT_EQ(table->Line(2), 5);
}

TEST(CsvTable, CrlfLineEndsAndBlankLines) {
  auto table = CsvTable::Parse("params,loss\r\n1e6,3.5\r\n\r\n2e6,\"3.2\"\r\n", "t.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->num_rows(), 2);
  EXPECT_EQ(table->columns()[1], "loss");  // no stray '\r'
  EXPECT_EQ(table->Cell(0, 1), "3.5");
  EXPECT_EQ(table->Cell(1, 1), "3.2");
  EXPECT_EQ(table->Line(1), 4);
  EXPECT_DOUBLE_EQ(*table->PositiveNumber(1, 1), 3.2);
}

TEST(CsvTable, MalformedInputNamesTheLine) {
  auto fields = CsvTable::Parse("a,b\n1,2\n1,2,3\n", "bad.csv");
  ASSERT_FALSE(fields.ok());
  EXPECT_NE(Message(fields.status()).find("bad.csv:3: 3 fields, but the header has 2"), std::string::npos)
      << fields.status();
  auto open_quote = CsvTable::Parse("a,b\n1,\"2\n", "bad.csv");
  ASSERT_FALSE(open_quote.ok());
  EXPECT_NE(Message(open_quote.status()).find("bad.csv:2: a quoted field is not closed"), std::string::npos);
  auto missing = CsvTable::Read("/nonexistent/results.csv");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(Message(missing.status()).find("/nonexistent/results.csv: cannot open"), std::string::npos);
}

TEST(CsvTable, ReadsAFile) {
  const std::string path = ::testing::TempDir() + "csv_table_test.csv";
  std::ofstream(path) << "params,tokens,loss\n1e6,2e7,3.1\n";
  auto table = CsvTable::Read(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->path(), path);
  EXPECT_EQ(table->num_rows(), 1);
  std::remove(path.c_str());
}

TEST(ReadObservations, MissingColumnNamesItAndListsThePresentOnes) {
  auto table = CsvTable::Parse("params,tokens,val_loss\n1e6,2e7,3.1\n", "r.csv");
  ASSERT_TRUE(table.ok());
  auto obs = ReadObservations(*table, ObservationColumns{});
  ASSERT_FALSE(obs.ok());
  EXPECT_EQ(Message(obs.status()),
            "r.csv: no column 'loss' (columns: params, tokens, val_loss); name it with --loss COL");
  ObservationColumns renamed;
  renamed.loss = "val_loss";
  auto ok = ReadObservations(*table, renamed);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_DOUBLE_EQ(ok->rows[0].loss, 3.1);
}

TEST(ReadObservations, BadValuesNameFileLineColumnAndValue) {
  struct Case {
    std::string cell, want;
  };
  for (const Case& c :
       {Case{"abc", "r.csv:3: column 'tokens': 'abc' is not a number; remove the row or mark its status"},
        Case{"-5", "r.csv:3: column 'tokens': '-5' is not positive"},
        Case{"0", "r.csv:3: column 'tokens': '0' is not positive"},
        Case{"inf", "r.csv:3: column 'tokens': 'inf' is not finite"},
        Case{"nan", "r.csv:3: column 'tokens': 'nan' is not finite"},
        Case{"", "r.csv:3: column 'tokens': empty"}}) {
    auto table = CsvTable::Parse("params,tokens,loss\n1e6,2e7,3.1\n2e6," + c.cell + ",3.0\n", "r.csv");
    ASSERT_TRUE(table.ok());
    auto obs = ReadObservations(*table, ObservationColumns{});
    ASSERT_FALSE(obs.ok()) << c.cell;
    EXPECT_NE(Message(obs.status()).find(c.want), std::string::npos) << obs.status();
  }
}

TEST(ReadObservations, RowsWhoseStatusIsNotOkAreSkippedAndCounted) {
  auto table = CsvTable::Parse(
      "params,tokens,loss,status\n"
      "1e6,2e7,3.1,ok\n"
      "2e6,,,failed\n"  // a failed run has no loss: skipped before its values are read
      "3e6,6e7,2.9,ok\n"
      "4e6,8e7,2.8,\n",
      "r.csv");
  ASSERT_TRUE(table.ok());
  auto obs = ReadObservations(*table, ObservationColumns{});
  ASSERT_TRUE(obs.ok()) << obs.status();
  EXPECT_EQ(obs->rows_read, 4);
  ASSERT_EQ(obs->rows.size(), 2u);
  EXPECT_EQ(obs->rows[1].line, 4);
  ASSERT_EQ(obs->skipped.size(), 2u);
  EXPECT_EQ(obs->skipped[0].line, 3);
  EXPECT_EQ(obs->skipped[0].reason, "status failed");
  EXPECT_EQ(obs->skipped[1].reason, "status empty");
}

TEST(ReadObservations, KvFractionAndBudgets) {
  auto table = CsvTable::Parse(
      "params,tokens,loss,kv_fraction,attention,budget_flops,flops\n"
      "1e6,2e7,3.1,0.25,NATS,1e17,1.1e17\n"
      "2e6,3e7,3.0,,DENSE,1e17,\n"  // dense with no kv value: kappa = 1
      "3e6,4e7,2.9,,NATS,,1e18\n",  // NAtS without a kv value: left out of the KV fit only
      "r.csv");
  ASSERT_TRUE(table.ok());
  auto obs = ReadObservations(*table, ObservationColumns{});
  ASSERT_TRUE(obs.ok()) << obs.status();
  ASSERT_EQ(obs->rows.size(), 3u);
  EXPECT_TRUE(obs->has_kv && obs->has_budget && obs->has_flops);
  EXPECT_DOUBLE_EQ(*obs->rows[0].kv, 0.25);
  EXPECT_DOUBLE_EQ(*obs->rows[1].kv, 1.0);
  EXPECT_FALSE(obs->rows[2].kv.has_value());
  EXPECT_EQ(obs->kv_missing, 1);
  EXPECT_DOUBLE_EQ(*obs->rows[0].budget, 1e17);
  EXPECT_FALSE(obs->rows[2].budget.has_value());
  EXPECT_DOUBLE_EQ(*obs->rows[2].flops, 1e18);

  auto above_one = CsvTable::Parse("params,tokens,loss,kv_fraction\n1e6,2e7,3.1,1.5\n", "r.csv");
  auto bad = ReadObservations(*above_one, ObservationColumns{});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(Message(bad.status()).find("r.csv:2: column 'kv_fraction'"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace nats::scaling
