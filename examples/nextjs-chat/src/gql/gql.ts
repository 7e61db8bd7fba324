/* eslint-disable */
import * as types from './graphql';
import type { TypedDocumentNode as DocumentNode } from '@graphql-typed-document-node/core';

/**
 * Map of all GraphQL operations in the project.
 *
 * This map has several performance disadvantages:
 * 1. It is not tree-shakeable, so it will include all operations in the project.
 * 2. It is not minifiable, so the string of a GraphQL query will be multiple times inside the bundle.
 * 3. It does not support dead code elimination, so it will add unused operations.
 *
 * Therefore it is highly recommended to use the babel or swc plugin for production.
 * Learn more about it here: https://the-guild.dev/graphql/codegen/plugins/presets/preset-client#reducing-bundle-size
 */
type Documents = {
    "\n  mutation CreateConversation($input: CreateConversationInput!) {\n    createConversation(input: $input) {\n      id\n      title\n      model\n      turnCount\n      updatedAt\n    }\n  }\n": typeof types.CreateConversationDocument,
    "\n  subscription CompletionStream($input: CompletionInput!) {\n    completionStream(input: $input) {\n      logId\n      delta\n      done\n      log {\n        id\n        completion\n        status\n        promptTokens\n        completionTokens\n        costMicrocents\n      }\n    }\n  }\n": typeof types.CompletionStreamDocument,
    "\n  query Conversations($first: Int!, $after: String) {\n    conversations(first: $first, after: $after) {\n      edges {\n        cursor\n        node {\n          id\n          title\n          model\n          turnCount\n          updatedAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": typeof types.ConversationsDocument,
    "\n  query History($first: Int!, $after: String, $filter: HistoryFilter) {\n    history(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          createdAt\n          model\n          prompt\n          completion\n          status\n          inFlight\n          promptTokens\n          completionTokens\n          latencyMs\n          costMicrocents\n          conversation {\n            id\n            title\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": typeof types.HistoryDocument,
    "\n  query Models {\n    models {\n      id\n      upstream\n      localUpstream\n    }\n    me {\n      id\n      profile {\n        defaultModel\n      }\n    }\n  }\n": typeof types.ModelsDocument,
    "\n  query ConversationTurns($id: ID!, $last: Int!, $before: String) {\n    conversation(id: $id) {\n      id\n      title\n      turns(last: $last, before: $before) {\n        edges {\n          cursor\n          node {\n            id\n            prompt\n            completion\n            status\n            inFlight\n            model\n          }\n        }\n        pageInfo {\n          hasPreviousPage\n          startCursor\n        }\n      }\n    }\n  }\n": typeof types.ConversationTurnsDocument,
    "\n  query UsageMeter {\n    me {\n      id\n      profile {\n        monthlyTokenBudget\n        tokensUsedThisMonth\n      }\n    }\n    usage {\n      calls\n      promptTokens\n      completionTokens\n      costMicrocents\n      byModel {\n        model\n        calls\n        costMicrocents\n      }\n    }\n  }\n": typeof types.UsageMeterDocument,
};
const documents: Documents = {
    "\n  mutation CreateConversation($input: CreateConversationInput!) {\n    createConversation(input: $input) {\n      id\n      title\n      model\n      turnCount\n      updatedAt\n    }\n  }\n": types.CreateConversationDocument,
    "\n  subscription CompletionStream($input: CompletionInput!) {\n    completionStream(input: $input) {\n      logId\n      delta\n      done\n      log {\n        id\n        completion\n        status\n        promptTokens\n        completionTokens\n        costMicrocents\n      }\n    }\n  }\n": types.CompletionStreamDocument,
    "\n  query Conversations($first: Int!, $after: String) {\n    conversations(first: $first, after: $after) {\n      edges {\n        cursor\n        node {\n          id\n          title\n          model\n          turnCount\n          updatedAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": types.ConversationsDocument,
    "\n  query History($first: Int!, $after: String, $filter: HistoryFilter) {\n    history(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          createdAt\n          model\n          prompt\n          completion\n          status\n          inFlight\n          promptTokens\n          completionTokens\n          latencyMs\n          costMicrocents\n          conversation {\n            id\n            title\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": types.HistoryDocument,
    "\n  query Models {\n    models {\n      id\n      upstream\n      localUpstream\n    }\n    me {\n      id\n      profile {\n        defaultModel\n      }\n    }\n  }\n": types.ModelsDocument,
    "\n  query ConversationTurns($id: ID!, $last: Int!, $before: String) {\n    conversation(id: $id) {\n      id\n      title\n      turns(last: $last, before: $before) {\n        edges {\n          cursor\n          node {\n            id\n            prompt\n            completion\n            status\n            inFlight\n            model\n          }\n        }\n        pageInfo {\n          hasPreviousPage\n          startCursor\n        }\n      }\n    }\n  }\n": types.ConversationTurnsDocument,
    "\n  query UsageMeter {\n    me {\n      id\n      profile {\n        monthlyTokenBudget\n        tokensUsedThisMonth\n      }\n    }\n    usage {\n      calls\n      promptTokens\n      completionTokens\n      costMicrocents\n      byModel {\n        model\n        calls\n        costMicrocents\n      }\n    }\n  }\n": types.UsageMeterDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 *
 *
 * @example
 * ```ts
 * const query = graphql(`query GetUser($id: ID!) { user(id: $id) { name } }`);
 * ```
 *
 * The query argument is unknown!
 * Please regenerate the types.
 */
export function graphql(source: string): unknown;

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CreateConversation($input: CreateConversationInput!) {\n    createConversation(input: $input) {\n      id\n      title\n      model\n      turnCount\n      updatedAt\n    }\n  }\n"): (typeof documents)["\n  mutation CreateConversation($input: CreateConversationInput!) {\n    createConversation(input: $input) {\n      id\n      title\n      model\n      turnCount\n      updatedAt\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription CompletionStream($input: CompletionInput!) {\n    completionStream(input: $input) {\n      logId\n      delta\n      done\n      log {\n        id\n        completion\n        status\n        promptTokens\n        completionTokens\n        costMicrocents\n      }\n    }\n  }\n"): (typeof documents)["\n  subscription CompletionStream($input: CompletionInput!) {\n    completionStream(input: $input) {\n      logId\n      delta\n      done\n      log {\n        id\n        completion\n        status\n        promptTokens\n        completionTokens\n        costMicrocents\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Conversations($first: Int!, $after: String) {\n    conversations(first: $first, after: $after) {\n      edges {\n        cursor\n        node {\n          id\n          title\n          model\n          turnCount\n          updatedAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"): (typeof documents)["\n  query Conversations($first: Int!, $after: String) {\n    conversations(first: $first, after: $after) {\n      edges {\n        cursor\n        node {\n          id\n          title\n          model\n          turnCount\n          updatedAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query History($first: Int!, $after: String, $filter: HistoryFilter) {\n    history(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          createdAt\n          model\n          prompt\n          completion\n          status\n          inFlight\n          promptTokens\n          completionTokens\n          latencyMs\n          costMicrocents\n          conversation {\n            id\n            title\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"): (typeof documents)["\n  query History($first: Int!, $after: String, $filter: HistoryFilter) {\n    history(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          createdAt\n          model\n          prompt\n          completion\n          status\n          inFlight\n          promptTokens\n          completionTokens\n          latencyMs\n          costMicrocents\n          conversation {\n            id\n            title\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Models {\n    models {\n      id\n      upstream\n      localUpstream\n    }\n    me {\n      id\n      profile {\n        defaultModel\n      }\n    }\n  }\n"): (typeof documents)["\n  query Models {\n    models {\n      id\n      upstream\n      localUpstream\n    }\n    me {\n      id\n      profile {\n        defaultModel\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query ConversationTurns($id: ID!, $last: Int!, $before: String) {\n    conversation(id: $id) {\n      id\n      title\n      turns(last: $last, before: $before) {\n        edges {\n          cursor\n          node {\n            id\n            prompt\n            completion\n            status\n            inFlight\n            model\n          }\n        }\n        pageInfo {\n          hasPreviousPage\n          startCursor\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query ConversationTurns($id: ID!, $last: Int!, $before: String) {\n    conversation(id: $id) {\n      id\n      title\n      turns(last: $last, before: $before) {\n        edges {\n          cursor\n          node {\n            id\n            prompt\n            completion\n            status\n            inFlight\n            model\n          }\n        }\n        pageInfo {\n          hasPreviousPage\n          startCursor\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query UsageMeter {\n    me {\n      id\n      profile {\n        monthlyTokenBudget\n        tokensUsedThisMonth\n      }\n    }\n    usage {\n      calls\n      promptTokens\n      completionTokens\n      costMicrocents\n      byModel {\n        model\n        calls\n        costMicrocents\n      }\n    }\n  }\n"): (typeof documents)["\n  query UsageMeter {\n    me {\n      id\n      profile {\n        monthlyTokenBudget\n        tokensUsedThisMonth\n      }\n    }\n    usage {\n      calls\n      promptTokens\n      completionTokens\n      costMicrocents\n      byModel {\n        model\n        calls\n        costMicrocents\n      }\n    }\n  }\n"];

export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}

export type DocumentType<TDocumentNode extends DocumentNode<any, any>> = TDocumentNode extends DocumentNode<  infer TType,  any>  ? TType  : never;