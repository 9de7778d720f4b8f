import type Database from 'better-sqlite3';

export const JOURNAL_SCHEMA: string;
export const HISTORY_SQL: string;
export const INDEX_EVERY_ROWS: number;
export const INDEX_EVERY_MS: number;

export interface JournalWriter {
  /** Append one packed batch in one transaction (see openJournalWriter). */
  append(packed: Buffer): void;
  /** Index history if enough rows or time have accumulated since the last run (never throws). */
  afterAppend(): void;
  /** Index every appended row now (never throws; a failed run is retried later). */
  indexNow(): void;
}

export function openJournalWriter(db: Database.Database, opts?: { everyRows?: number; everyMs?: number; now?: () => number }): JournalWriter;
