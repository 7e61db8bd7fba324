"use client";

import { useEffect } from "react";
import { useQuery } from "urql";
import { graphql } from "@/gql";
import { apiErrors } from "@/lib/errors";
import { ErrorList } from "./ErrorList";

const ModelsQuery = graphql(`
  query Models {
    models {
      id
      upstream
      localUpstream
    }
    me {
      id
      profile {
        defaultModel
      }
    }
  }
`);

/** The models the API routes to; starts on the profile's default model. */
export function ModelPicker({ value, onChange }: { value: string | null; onChange: (model: string) => void }) {
  const [{ data, error }] = useQuery({ query: ModelsQuery });
  const defaultModel = data?.me?.profile.defaultModel;

  useEffect(() => {
    if (value === null && defaultModel) onChange(defaultModel);
  }, [value, defaultModel, onChange]);

  if (error) return <ErrorList errors={apiErrors(error)} />;
  if (!data) return null;
  const local = data.models.some((m) => m.localUpstream);
  return (
    <label className="model-picker">
      Model
      <select data-testid="model-picker" value={value ?? ""} onChange={(e) => onChange(e.target.value)}>
        {data.models.map((m) => (
          <option key={m.id} value={m.id}>
            {m.id}
          </option>
        ))}
      </select>
      {local && <span className="muted small">built-in local upstream: test tokens, not a model</span>}
    </label>
  );
}
