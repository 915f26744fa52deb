// A local one-second clock for live durations and costs: no requests, and it stands by in a hidden tab.
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

export class Ticker implements IDisposable {
  constructor() {
    this._poll = new Poll({
      factory: async () => this._ticked.emit(Date.now()),
      frequency: { interval: 1000, backoff: false },
      name: 'burstlab-lab:tick',
      standby: 'when-hidden'
    });
  }

  get ticked(): ISignal<this, number> {
    return this._ticked;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _poll: Poll;
  private _ticked = new Signal<this, number>(this);
}
