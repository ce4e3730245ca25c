// The slice of a pino logger the API uses, so tests can pass a silent or recording logger.
export interface ApiLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: ApiLogger = { debug() {}, info() {}, warn() {}, error() {} };
