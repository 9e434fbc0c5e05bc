import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import {
  CheckRequest,
  CheckResponse,
  checkMethodPath,
  type ICheckRequest,
  type ICheckResponse,
} from '../../proto/envoy.js';

/** A plain gRPC client of the sidecar, for tests of the gRPC surface itself (not Envoy's view). */
export class SidecarClient {
  readonly #client: grpc.Client;
  readonly #health: grpc.Client & {
    check(
      req: { service: string },
      cb: (err: grpc.ServiceError | null, v?: { status: string }) => void,
    ): void;
  };
  readonly #reflection: grpc.Client & { ServerReflectionInfo(): grpc.ClientDuplexStream<unknown, unknown> };

  constructor(readonly port: number) {
    const target = `127.0.0.1:${port}`;
    const creds = grpc.credentials.createInsecure();
    this.#client = new grpc.Client(target, creds);
    const health = grpc.loadPackageDefinition(
      protoLoader.loadSync(healthProtoPath, { enums: String }),
    ) as never as {
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    };
    this.#health = new health.grpc.health.v1.Health(target, creds) as never;
    const require = createRequire(import.meta.url);
    const reflectionProto = join(
      dirname(require.resolve('@grpc/reflection/package.json')),
      'build/proto/grpc/reflection/v1/reflection.proto',
    );
    const refl = grpc.loadPackageDefinition(protoLoader.loadSync(reflectionProto)) as never as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    this.#reflection = new refl.grpc.reflection.v1.ServerReflection(target, creds) as never;
  }

  check(req: ICheckRequest, deadlineMs = 2000): Promise<ICheckResponse> {
    return new Promise((res, rej) =>
      this.#client.makeUnaryRequest(
        checkMethodPath,
        (m: ICheckRequest) => Buffer.from(CheckRequest.encode(m).finish()),
        (b: Buffer) => CheckResponse.decode(b),
        req,
        { deadline: Date.now() + deadlineMs },
        (err, value) => (err ? rej(err) : res(value as ICheckResponse)),
      ),
    );
  }

  health(service = ''): Promise<string> {
    return new Promise((res, rej) =>
      this.#health.check({ service }, (err, value) => (err ? rej(err) : res(value?.status ?? 'UNKNOWN'))),
    );
  }

  /** Service names the server lists through grpc.reflection.v1. */
  listServices(): Promise<string[]> {
    return new Promise((res, rej) => {
      const call = this.#reflection.ServerReflectionInfo();
      call.on('data', (msg: { listServicesResponse?: { service: { name: string }[] } }) => {
        res((msg.listServicesResponse?.service ?? []).map((s) => s.name));
        call.end();
      });
      call.on('error', rej);
      call.write({ listServices: '' });
    });
  }

  close(): void {
    this.#client.close();
    this.#health.close();
    this.#reflection.close();
  }
}

export function httpCheck(path: string, extra: Record<string, unknown> = {}): ICheckRequest {
  return {
    attributes: {
      source: { address: { socketAddress: { address: '127.0.0.1', portValue: 5555 } } },
      request: {
        http: {
          method: 'GET',
          host: 'app.local',
          path,
          scheme: 'http',
          protocol: 'HTTP/1.1',
          headers: {},
          ...extra,
        },
      },
    },
  };
}
