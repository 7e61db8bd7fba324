// Int64 values arrive as decimal strings: BigInt keeps them exact.

const integer = new Intl.NumberFormat("en-US");

export function formatInt64(value: string): string {
  return integer.format(BigInt(value));
}

/** Micro-cents (1 USD = 10^8) as exact dollars: "$0.0000174", "$12.50". */
export function formatMicrocents(value: string): string {
  const microcents = BigInt(value);
  const sign = microcents < 0n ? "-" : "";
  const abs = microcents < 0n ? -microcents : microcents;
  const fraction = (abs % 100_000_000n).toString().padStart(8, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${sign}$${integer.format(abs / 100_000_000n)}.${fraction}`;
}

const dateTime = new Intl.DateTimeFormat("en-GB", {
  dateStyle: "medium",
  timeStyle: "medium",
  timeZone: "UTC",
});

export function formatDateTime(value: string): string {
  return `${dateTime.format(new Date(value))} UTC`;
}
