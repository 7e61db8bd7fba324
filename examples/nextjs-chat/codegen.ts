import type { CodegenConfig } from "@graphql-codegen/cli";

// Typed documents from the server's exported SDL. CI regenerates them and fails when the output
// differs from what is committed (`git status --porcelain src/gql`), and when a document no
// longer validates against the schema (codegen exits non-zero), so a schema change that breaks
// the app fails CI before `next build` type-checks the rest.
const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["src/**/*.{ts,tsx}", "!src/gql/**/*"],
  ignoreNoDocuments: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: { fragmentMasking: false },
      config: {
        enumsAsTypes: true,
        useTypeImports: true,
        // The server's custom scalars as they arrive in JSON. Int64 is a decimal string so
        // that 64-bit budgets and costs reach JavaScript exactly (read it with BigInt).
        scalars: {
          DateTime: "string",
          NaiveDate: "string",
          Int64: "string",
          JSON: "unknown",
        },
        strictScalars: true,
      },
    },
  },
};

export default config;
